"""The resource sampler: samples arrive from a background thread without blocking anyone."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from profiles.sampler import ResourceSample, ResourceSampler
from profiles.user_errors import UsageError


def wait_for_sample(sampler: ResourceSampler, deadline_s: float = 10.0) -> ResourceSample:
    """Poll until a sample arrives, keeping a core busy so there is CPU time to see."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        sample = sampler.poll()
        if sample is not None:
            return sample
        sum(i * i for i in range(20_000))
    raise AssertionError(f"no sample within {deadline_s} s")


def test_cpu_sampler_reports_rss_and_cpu() -> None:
    with ResourceSampler("cpu", interval_s=0.05) as sampler:
        first = wait_for_sample(sampler)
        second = wait_for_sample(sampler)
    assert first.rss_bytes is not None and first.rss_bytes > 10 << 20
    assert first.cpu_percent is not None and first.cpu_percent >= 0
    assert (first.gpu_util, first.gpu_mem_used, first.gpu_mem_total) == (None, None, None)
    assert second.t > first.t  # each sample is returned once
    assert abs(first.t - time.time()) < 60


def test_poll_never_blocks_and_stop_ends_the_thread() -> None:
    sampler = ResourceSampler("cpu", interval_s=3600).start()
    assert sampler.running
    started = time.monotonic()
    assert sampler.poll() is None  # nothing yet, and no waiting for it
    sampler.stop()  # does not wait out the interval
    assert time.monotonic() - started < 30
    assert not sampler.running
    with pytest.raises(RuntimeError):
        sampler.start()


def test_gpu_sample_comes_from_nvml_for_the_rank_device(
    fake_nvml: Callable[..., ModuleType], h100: dict[str, Any], t4: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = fake_nvml([h100, t4])
    sampler = ResourceSampler("cuda:1", interval_s=0.05).start()
    sample = wait_for_sample(sampler)
    sampler.stop()
    assert (sample.gpu_util, sample.gpu_mem_used, sample.gpu_mem_total) == (
        97.0, 6 << 30, 16 << 30)
    assert sample.rss_bytes is not None
    assert fake.calls["init"] == fake.calls["shutdown"] == 1  # NVML closed on stop


def test_unsupported_gpu_fields_are_none(
    fake_nvml: Callable[..., ModuleType], h100: dict[str, Any],
) -> None:
    h100["util"] = "unsupported"
    fake_nvml([h100])
    sampler = ResourceSampler("cuda:0")
    sample = sampler.sample()
    sampler.stop()
    assert sample.gpu_util is None and sample.gpu_mem_total == 80 << 30


def test_without_nvml_a_gpu_rank_still_samples_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    sampler = ResourceSampler("cuda:0")
    sample = sampler.sample()
    sampler.stop()
    assert sample.gpu_mem_used is None and sample.rss_bytes is not None


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu:0"])
def test_bad_device_is_a_usage_error(device: str) -> None:
    with pytest.raises(UsageError, match=device):
        ResourceSampler(device)
