"""Each event line a follower copies is parsed once: the stream's typed event goes on to the
monitor, TensorBoard and every tracker's process (``feed_copies``), none parses the text again.
Real tailer, real TensorBoard writer, a real tracker process (forked, so that it counts its
parses with the follower's counter)."""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from remote.config.cluster import HostSection
from remote.hosts.transport import LocalTransport
from remote.records import tracker_process, tracking
from remote.records.collected import CollectedCopy
from remote.records.scalars import feed_copies
from remote.records.tensorboard import BoardWriter, available, board_dir
from remote.records.tracker_sinks import TrackerStart
from remote.run.stream import tail_host
from trainer.events import TrainerEvent, event_to_json
from trainer.events import codec as events_module

try:
    from recorded import synthetic_run
except ImportError:  # collected as a package
    from tests.remote.recorded import synthetic_run  # type: ignore[no-redef]

FORK = multiprocessing.get_context("fork")


class CountingSink:
    """A tracker that counts the points it is sent (in the tracker's process)."""

    name = "counting"

    def __init__(self, points: Any) -> None:
        self.points = points

    def open(self, resume: str | None, start: TrackerStart) -> str:
        return resume or "run-1"

    def params(self, params: dict[str, str]) -> None: ...

    def metrics(self, points: list[Any]) -> None:
        with self.points.get_lock():
            self.points.value += len(points)

    def text(self, step: int, name: str, text: str) -> None: ...

    def model(self, directory: Path) -> None: ...

    def close(self, state: str | None) -> None: ...


def _write_run(run_dir: Path, lines: list[tuple[str, Any]]) -> int:
    """The run's event files on host ``h`` (ranks 0 and 1), its launcher ended; the number of
    event lines."""
    for folder in ("logs/h", "hosts", "metrics"):
        (run_dir / folder).mkdir(parents=True, exist_ok=True)
    (run_dir / "logs" / "h" / "launcher.log").write_text(  # torchrun's rendezvous result
        "I1121 05:27:09.878000 20394 torch/distributed/elastic/agent/server/api.py:553]   "
        "global_ranks=[0,1]\n")
    (run_dir / "hosts" / "h.planned").write_text("0\n1\n")
    by_rank: dict[int, list[str]] = {0: [], 1: []}
    for _, event in lines:
        assert isinstance(event, TrainerEvent)
        by_rank[event.rank].append(event_to_json(event))
    for rank, texts in by_rank.items():
        (run_dir / "metrics" / f"rank-{rank}.jsonl").write_text("\n".join(texts) + "\n")
    (run_dir / "hosts" / "h.exit").write_text("0\n")
    return sum(len(texts) for texts in by_rank.values())


async def _follow(run_dir: Path, copy: CollectedCopy, workdir: Path) -> int:
    host = HostSection(name="h", address="local", python=sys.executable, workdir=str(workdir))
    return sum([1 async for _ in tail_host(LocalTransport(host), str(run_dir), copy)])


def test_each_line_is_parsed_once_for_the_monitor_tensorboard_and_a_tracker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not available():
        pytest.skip("TensorBoard's writer is not installed")
    parses, points = FORK.Value("i", 0), FORK.Value("i", 0)
    parse = events_module.event_from_dict

    def counted(obj: dict[str, Any]) -> TrainerEvent | None:
        with parses.get_lock():
            parses.value += 1
        return parse(obj)

    monkeypatch.setattr(events_module, "event_from_dict", counted)
    monkeypatch.setattr(tracking.multiprocessing, "get_context", lambda _: FORK)
    monkeypatch.setattr(tracker_process, "make_sink", lambda *_: CountingSink(points))
    run_dir, local = tmp_path / "run", tmp_path / "local"
    line_count = _write_run(run_dir, synthetic_run(steps=12, move_at=None, end="completed"))
    start = TrackerStart(experiment="e", name="n", tags={}, params={})
    tracker = tracking.TrackerWriter("counting", "", local, start, warn=print)
    board = BoardWriter(board_dir(local))
    copy = CollectedCopy(local, "h")
    feed_copies([copy], [board, tracker])
    items = asyncio.run(_follow(run_dir, copy, tmp_path))
    copy.close()
    board.close()
    tracker.close("completed")
    assert tracker.wait() and not tracker.failed
    assert items >= line_count  # the monitor had every line's event
    assert parses.value == line_count
    deadline = time.monotonic() + 30
    while points.value == 0 and time.monotonic() < deadline:  # the queue's feeder thread
        time.sleep(0.01)
    assert points.value > 0  # the tracker's process had the steps (typed, unparsed)
