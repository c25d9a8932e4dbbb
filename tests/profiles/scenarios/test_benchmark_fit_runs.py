"""The runs (slow tier) of what ``tests/profiles/test_benchmark_fit.py`` tests: the benchmark
machinery: the fit, the timing plumbing and the largest-batch search."""

from __future__ import annotations

import pytest
import torch

from profiles.bench import (
    BenchConfig,
    benchmark,
)
from tests.profiles.test_benchmark_fit import tiny_step


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_tiny_model_on_cuda() -> None:
    config = BenchConfig(batches=(8, 64), warmup=2, repeats=3, max_batch_limit=1 << 14)
    profile = benchmark(tiny_step("cuda:0"), model="tiny", device="cuda:0",  # type: ignore[arg-type]
                        config=config)
    assert profile.device_name == torch.cuda.get_device_name(0)
    assert profile.max_batch is not None and profile.max_batch >= 64
    assert all(t > 0 for t in profile.step_s)
