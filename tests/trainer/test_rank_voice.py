"""Every rank's voice: corral's own loop lets each rank's warnings and errors through, not only
rank 0's (the console and ``corral logs`` fold the same line of several ranks into one)."""

from __future__ import annotations

import pytest

import profiles.sampler
from trainer.resources import ResourceReporter


class BrokenSampler:
    def __init__(self, device: str, *, interval_s: float) -> None:
        raise RuntimeError("NVML not found")


@pytest.mark.parametrize("rank", [0, 2])
def test_a_ranks_own_warning_is_said_by_that_rank(
        rank: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(profiles.sampler, "ResourceSampler", BrokenSampler)
    ResourceReporter("cuda:0", 1.0, rank, events=None)  # type: ignore[arg-type]
    assert capsys.readouterr().err == (
        f"corral trainer: rank {rank}: resource sampling disabled (NVML not found)\n")
