"""A rank's ``resources`` events follow its place in the run (issue 78): after a host before it
left, its samples are written as its member id, as its steps are, never under the rank it
started with (which the new generation may not have: the rank died on an IndexError)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import profiles.sampler
from trainer.event_log import EventWriter
from trainer.resources import ResourceReporter


class _Sampler:
    """A sampler with a sample at every poll."""

    def __init__(self, device: str, interval_s: float) -> None:
        del device, interval_s

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def poll(self) -> SimpleNamespace:
        return SimpleNamespace(gpu_util=None, gpu_mem_used=None, gpu_mem_total=None,
                               cpu_percent=1.0, rss_bytes=1)


def test_a_sample_after_a_membership_change_carries_the_ranks_member_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profiles.sampler, "ResourceSampler", _Sampler)
    with EventWriter(tmp_path / "rank-2.jsonl") as writer:
        writer.members = (0, 1, 2)  # generation 0: member 2 is rank 2
        reporter = ResourceReporter("cpu", 1.0, rank=2, events=writer)
        reporter.poll(2)
        writer.members = (0, 2)  # member 1's host left: member 2 is rank 1 now
        reporter.poll(1)
        reporter.stop()
    lines = (tmp_path / "rank-2.jsonl").read_text().splitlines()
    assert [json.loads(line)["rank"] for line in lines] == [2, 2]
