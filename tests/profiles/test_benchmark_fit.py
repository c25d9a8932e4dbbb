"""The benchmark machinery: the fit, the timing plumbing and the largest-batch search."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from profiles import host
from profiles.bench import (
    BatchTooLargeError,
    BenchConfig,
    benchmark,
    fit_linear,
    fits,
    largest_fitting,
    max_batch_cuda,
)


def test_fit_recovers_exact_line() -> None:
    batches = [8, 16, 32, 64]
    a, c = fit_linear(batches, [0.004 + 0.0007 * b for b in batches])
    assert a == pytest.approx(0.004) and c == pytest.approx(0.0007)


def test_fit_clamps_a_negative_intercept_to_a_line_through_the_origin() -> None:
    batches = [10, 20, 30]
    times = [0.05, 0.15, 0.25]  # unconstrained fit: a = -0.05
    a, c = fit_linear(batches, times)
    assert a == 0.0
    assert c == pytest.approx(sum(b * t for b, t in zip(batches, times, strict=True))
                              / sum(b * b for b in batches))


def test_fit_of_a_falling_line_is_flat() -> None:
    a, c = fit_linear([8, 16, 32], [0.3, 0.2, 0.1])
    assert c == 0.0 and a == pytest.approx(0.2)


def test_fit_of_one_batch_passes_through_it() -> None:
    a, c = fit_linear([16], [0.08])
    assert a + c * 16 == pytest.approx(0.08)


def test_benchmark_recovers_a_synthetic_step() -> None:
    calls: list[int] = []

    def step(batch: int) -> float:  # reports its own (exact) time
        calls.append(batch)
        return 0.003 + 0.0002 * batch

    config = BenchConfig(batches=(32, 8, 16), warmup=1, repeats=3, find_max_batch=False)
    profile = benchmark(step, model="synthetic", config=config, threads=1, slowdown=2.0)
    assert profile.batches == (8, 16, 32)
    assert profile.a == pytest.approx(0.003) and profile.c == pytest.approx(0.0002)
    assert calls.count(8) == 4 and profile.max_batch is None
    assert (profile.model, profile.threads, profile.slowdown) == ("synthetic", 1, 2.0)
    assert profile.samples_per_s(16) == pytest.approx(16 / (0.003 + 0.0002 * 16))


def test_benchmark_times_a_step_that_reports_nothing() -> None:
    def step(batch: int) -> None:
        time.sleep(0.001 + 0.0001 * batch)

    config = BenchConfig(batches=(1, 10), warmup=0, repeats=2, find_max_batch=False)
    profile = benchmark(step, model="sleepy", config=config)
    # A sleep never ends early, so the wall-clock medians are at least the requested time.
    assert profile.step_s[0] >= 0.0011 and profile.step_s[1] >= 0.002


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(x)
        return out


def tiny_step(device: str) -> object:
    model = TinyNet().to(device)

    def step(batch: int) -> None:
        x = torch.randn(batch, 3, 32, 32, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()

    return step


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared: one thread keeps timings stable
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_real_tiny_model_on_cpu_costs_time_and_memory_per_sample() -> None:
    config = BenchConfig(batches=(2, 256), warmup=1, repeats=5)
    profile = benchmark(tiny_step("cpu"), model="tiny", config=config)  # type: ignore[arg-type]
    assert profile.c > 0  # 128x the samples costs more time
    assert profile.step_s[1] > profile.step_s[0] and profile.threads == 1
    assert profile.device == "cpu" and profile.device_name == (host.cpu_model() or "unknown CPU")
    if host.reset_peak_rss():  # Linux: the RAM cap is measured
        assert profile.max_batch is not None and profile.max_batch > 256


def test_largest_fitting_brackets_the_limit() -> None:
    tried: list[int] = []

    def under_1000(batch: int) -> bool:
        tried.append(batch)
        return batch <= 1000

    found = largest_fitting(under_1000, 32, 1 << 16)
    assert found is not None and 1000 * 15 / 16 <= found <= 1000
    assert max(tried) < 2048  # stopped growing at the first failure
    assert largest_fitting(lambda b: True, 32, 100) == 100
    assert largest_fitting(lambda b: False, 32, 100) is None


def test_out_of_memory_is_caught_and_other_errors_are_not() -> None:
    def step(batch: int) -> None:
        if batch > 300:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        if batch == 7:
            raise RuntimeError("shape mismatch")

    assert fits(step, 300, device="cpu") and not fits(step, 301, device="cpu")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        fits(step, 7, device="cpu")
    config = BenchConfig(batches=(32,), memory_headroom=0.9)
    found = max_batch_cuda(step, device="cpu", start=32, config=config)
    assert found is not None and int(300 * 15 / 16 * 0.9) <= found <= int(300 * 0.9)


def test_a_benchmarked_batch_that_does_not_fit_is_a_usage_error() -> None:
    def step(batch: int) -> float:
        if batch > 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return 0.01

    config = BenchConfig(batches=(8, 64), warmup=0, repeats=1)
    with pytest.raises(BatchTooLargeError, match="batch 64") as raised:
        benchmark(step, model="big", config=config)
    assert raised.value.exit_code == 2
