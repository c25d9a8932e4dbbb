"""A seat opened on a run replays the record (this machine's copy) first, then follows: every
line of every rank, attempt and host (one that left included) is folded once, up to the
offsets the tail goes on from, never twice and never skipped."""

from __future__ import annotations

import json
from pathlib import Path

from remote.records.collected import CollectedCopy
from remote.records.replay import RecordReplay
from trainer.events import StartEvent, StepEvent

PATH0, PATH1 = "metrics/rank-0.jsonl", "metrics/rank-1.jsonl"


def line(kind: str, rank: int, t: float, step: int) -> str:
    if kind == "start":
        return json.dumps({"event": "start", "v": 1, "t": t, "rank": rank, "world_size": 2,
                           "local_rank": 0, "host": "h", "pid": 1, "device": "cpu",
                           "device_name": "cpu", "backend": "gloo", "model": "m",
                           "dataset": "d", "global_batch": 8, "split": [4, 4],
                           "policy": "static", "step": step, "total_steps": 10,
                           "steps_per_epoch": 10, "threads": 1, "slowdown": 1.0,
                           "resumed_from": None})
    return json.dumps({"event": "step", "v": 1, "t": t, "rank": rank, "step": step,
                       "epoch": 0, "local_batch": 4, "loss": 1.0, "compute_s": 0.1,
                       "step_s": 0.2})


class HostFile:
    """One host file as a follower copies it: each line at its end offset on the host."""

    def __init__(self, copy: CollectedCopy, path: str) -> None:
        self.copy, self.path, self.offset = copy, path, 0

    def add(self, text: str) -> None:
        self.offset += len(text) + 1
        self.copy.append(self.path, text, self.offset)


def test_a_second_seat_replays_what_the_copy_saved_and_tails_from_there(tmp_path: Path) -> None:
    writer = CollectedCopy(tmp_path, "a")
    rank0 = HostFile(writer, PATH0)
    for text in (line("start", 0, 1.0, 0), line("step", 0, 2.0, 1)):
        rank0.add(text)
    writer.save()
    rank0.add(line("step", 0, 3.0, 2))  # copied, not saved yet: the tail sends it again
    seat = CollectedCopy(tmp_path, "a")
    try:
        assert not seat.writer
        replayed = RecordReplay(tmp_path).take({"a": seat.saved})
        assert [type(r.event) for r in replayed] == [StartEvent, StepEvent]
        # The tail goes on right after the replayed lines.
        assert seat.offsets[PATH0] == len(line("start", 0, 1.0, 0)) + len(
            line("step", 0, 2.0, 1)) + 2
    finally:
        seat.close()
        writer.close()


def test_every_hosts_copy_is_replayed_in_time_order_a_torn_line_waits(tmp_path: Path) -> None:
    for host, path, rank in (("a", PATH0, 0), ("left", PATH1, 1)):
        copy = CollectedCopy(tmp_path, host)
        file = HostFile(copy, path)
        for t, step in ((1.0, 0), (2.0 + rank, 1), (4.0 + rank, 2)):
            file.add(line("start" if step == 0 else "step", rank, t, step))
        copy.save()
        copy.close()
    with open(tmp_path / "collected" / "a" / PATH0, "a") as torn:
        torn.write('{"event": "step", "t"')  # beyond the saved sizes: never read
    replayed = RecordReplay(tmp_path).take()
    assert [(r.host, r.t) for r in replayed] == [
        ("a", 1.0), ("left", 1.0), ("a", 2.0), ("left", 3.0), ("a", 4.0), ("left", 5.0)]


def test_after_an_attempt_only_the_lines_copied_before_the_relaunch_are_replayed(
        tmp_path: Path) -> None:
    copy = CollectedCopy(tmp_path, "a")
    file = HostFile(copy, PATH0)
    file.add(line("start", 0, 1.0, 0))
    copy.save()
    replay = RecordReplay(tmp_path)
    assert len(replay.take({"a": copy.saved})) == 1  # the seat opens: the record so far
    file.add(line("step", 0, 2.0, 1))  # shown live
    copy.save()
    replay.shown("a", copy.saved)  # the attempt ends
    file.add(line("step", 0, 3.0, 2))  # catch_up: written as the rank was stopped
    copy.save()
    copy.close()
    assert [r.t for r in replay.take()] == [3.0]
    assert replay.take() == []


def test_a_second_seat_after_a_relaunch_replays_only_what_it_did_not_show(
        tmp_path: Path) -> None:
    """A seat attached before a relaunch (its copy is the launching corral's, it only reads):
    the lines it showed live are not replayed when it follows the next attempt, the lines the
    launching corral copied before the relaunch are."""
    writer = CollectedCopy(tmp_path, "a")
    written = HostFile(writer, PATH0)
    written.add(line("start", 0, 1.0, 0))
    writer.save()
    seat = CollectedCopy(tmp_path, "a")
    replay = RecordReplay(tmp_path)
    assert len(replay.take({"a": seat.saved})) == 1  # attached: the record so far
    read = HostFile(seat, PATH0)
    read.offset = written.offset
    for t, step in ((2.0, 1), (3.0, 2)):  # shown live by both followers
        written.add(line("step", 0, t, step))
        read.add(line("step", 0, t, step))
    writer.save()
    seat.save()
    replay.shown("a", seat.saved)  # the attempt ends
    seat.close()
    written.add(line("step", 0, 4.0, 3))  # catch_up: written as the rank was stopped
    writer.save()
    writer.close()
    next_attempt = CollectedCopy(tmp_path, "a")
    try:
        assert [r.t for r in replay.take({"a": next_attempt.saved})] == [4.0]
    finally:
        next_attempt.close()
