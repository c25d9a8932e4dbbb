"""A GPU rank's resources events carry its SM utilisation (NVML, faked here) and its peak GPU
memory from torch's allocator (faked: no GPU here)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from trainer.event_log import EventWriter
from trainer.resources import ResourceReporter

GIB = 1 << 30


def test_a_cuda_rank_reports_nvml_utilisation_and_its_peak_memory(
    fake_nvml: Callable[..., ModuleType], h100: dict[str, Any], t4: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_nvml([h100, t4])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    peaks = {"cuda:1": (3 * GIB, 5 * GIB)}
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: peaks[device][0])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device: peaks[device][1])
    path = tmp_path / "rank-1.jsonl"
    events = EventWriter(path)
    reporter = ResourceReporter("cuda:1", 0.05, 1, events)
    deadline = time.monotonic() + 10.0
    while not path.read_text() and time.monotonic() < deadline:
        reporter.poll()  # never blocks: a sample shows up within an interval or two
    reporter.stop()
    events.close()
    event = json.loads(path.read_text().splitlines()[0])
    assert event["event"] == "resources"
    assert event["gpu_util"] == t4["util"]  # cuda:1 is the second GPU NVML lists
    assert (event["gpu_peak_allocated"], event["gpu_peak_reserved"]) == (3 * GIB, 5 * GIB)


def test_a_cpu_rank_has_no_peak_gpu_memory(tmp_path: Path) -> None:
    from trainer.resources import peak_gpu_memory

    assert peak_gpu_memory("cpu") == (None, None)
