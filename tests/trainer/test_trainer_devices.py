"""Device and backend choice; the CUDA path runs only where a GPU is present."""

from __future__ import annotations

import pytest
import torch

from profiles.user_errors import UsageError
from trainer.dist import choose_backend, choose_device


def test_auto_backend_is_nccl_on_cuda_and_gloo_on_cpu() -> None:
    assert choose_backend("auto", torch.device("cuda", 0)) == "nccl"
    assert choose_backend("auto", torch.device("cpu")) == "gloo"
    assert choose_backend("gloo", torch.device("cuda", 0)) == "gloo"  # mixed clusters
    with pytest.raises(UsageError, match="--backend nccl needs every rank on a CUDA GPU"):
        choose_backend("nccl", torch.device("cpu"))


def test_cpu_is_used_without_a_gpu_or_when_asked() -> None:
    assert choose_device("cpu", 0) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert choose_device("auto", 3) == torch.device("cpu")
        with pytest.raises(UsageError, match="no CUDA GPU"):
            choose_device("cuda", 0)
