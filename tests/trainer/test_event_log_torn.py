"""A rank's event written after a full disk cut a line short is whole on a line of its own:
the torn part alone is unreadable, never the next event (glued to the torn line, it was lost to
every reader of the file: a resumed rank's first event after a rank a full disk ended;
docs/reliability.md)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from trainer import event_log
from trainer.disk_full import DiskFull
from trainer.event_log import EventWriter
from trainer.events import EventFormatError, MembershipEvent, StepEvent, parse_event


def _step(step: int) -> StepEvent:
    return StepEvent(t=1.0, rank=0, step=step, epoch=0, local_batch=8, loss=0.5,
                     compute_s=0.1, step_s=0.1, samples_per_s=80.0)


LEFT = MembershipEvent(t=2.0, rank=0, generation=1, step=3, change="left", hosts=("n3",),
                       cause="ranks_died", world_size=1)


def _read(path: Path) -> list[object]:
    """Each line's event, or "torn" for a line that is none."""
    read: list[object] = []
    for line in path.read_text().split("\n")[:-1]:
        try:
            read.append(parse_event(line))
        except (EventFormatError, ValueError):
            read.append("torn")
    return read


def test_an_event_after_a_write_the_full_disk_cut_short_is_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rank-0.jsonl"
    writer = EventWriter(path)
    writer.emit(_step(1))

    def cut_short(fd: int, data: bytes) -> int:  # 20 bytes fit, then the disk is full
        monkeypatch.setattr(event_log, "_write", full)
        return os.write(fd, data[:20])

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(event_log, "_write", cut_short)
    with pytest.raises(DiskFull, match="the step event of rank 0 could not be written"):
        writer.emit(_step(2))
    with pytest.raises(DiskFull):  # nothing fits: still torn
        writer.emit(_step(2))
    monkeypatch.setattr(event_log, "_write", os.write)  # the disk has room again
    writer.emit(LEFT)
    writer.close()
    assert _read(path) == [_step(1), "torn", LEFT]


def test_a_resumed_rank_starts_its_events_on_a_line_of_their_own(tmp_path: Path) -> None:
    path = tmp_path / "rank-0.jsonl"
    with EventWriter(path) as writer:
        writer.emit(_step(1))
    with path.open("a") as earlier:  # an earlier attempt ended inside a line (a full disk)
        earlier.write('{"event":"step","v":1,"t":1.0,"ra')
    with EventWriter(path) as writer:
        writer.emit(LEFT)
    assert _read(path) == [_step(1), "torn", LEFT]
    with EventWriter(path) as writer:  # a file that ends a line gains no blank one
        writer.emit(_step(4))
    assert _read(path) == [_step(1), "torn", LEFT, _step(4)]
