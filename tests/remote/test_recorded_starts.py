"""``corral attach`` shows each rank's device from the copy's start events (they are behind the
offsets it continues from): the newest start of each rank, read from the local copy."""

from __future__ import annotations

import json
from pathlib import Path

from remote.records.history import recorded_starts
from trainer.events import StartEvent


def start_line(rank: int, t: float, device_name: str) -> str:
    return json.dumps({"event": "start", "v": 1, "t": t, "rank": rank, "world_size": 2,
                       "local_rank": 0, "host": "h", "pid": 1, "device": "cpu",
                       "device_name": device_name, "backend": "gloo", "model": "m",
                       "dataset": "d", "global_batch": 8, "split": [4, 4], "policy": "static",
                       "step": 0, "total_steps": 10, "steps_per_epoch": 10, "threads": 1,
                       "slowdown": 1.0, "resumed_from": None})


def test_the_newest_start_of_each_rank_is_read_from_the_copy(tmp_path: Path) -> None:
    for host, rank in (("a", 0), ("b", 1)):
        metrics = tmp_path / "collected" / host / "metrics"
        metrics.mkdir(parents=True)
        step = json.dumps({"event": "step", "v": 1, "t": 2.0, "rank": rank, "step": 1})
        (metrics / f"rank-{rank}.jsonl").write_text(
            "\n".join([start_line(rank, 1.0, "first"), step,
                       start_line(rank, 3.0, f"resumed on {host}"), "{torn"]) + "\n")
    starts = recorded_starts(tmp_path)
    assert [(line.host, line.rank) for line in starts] == [("a", 0), ("b", 1)]
    assert all(isinstance(line.event, StartEvent) for line in starts)
    assert [line.event.device_name for line in starts] == [  # type: ignore[union-attr]
        "resumed on a", "resumed on b"]
