"""A rank's event log: where it is (``events_path``) and its one writer (``EventWriter``): one
JSON line per event (``trainer/events/``), flushed as written, a full disk named.

A write the disk cut short leaves part of a line at the file's end (the rank ends on it, and
what a buffer still held would go with the process); the next line written there, a resumed
rank's first event or this writer's next, starts on a line of its own, so the torn part alone
is unreadable, never an event after it (glued to the torn line, it was lost to every reader).
The file is written with ``os.write``, no buffer in between, so what reached it is known.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from trainer.disk_full import DiskFull, is_disk_full
from trainer.events import TrainerEvent, event_to_json
from trainer.run_layout import RunLayout


def events_path(run_dir: str | os.PathLike[str], rank: int) -> Path:
    """Where rank ``rank`` writes its events inside ``run_dir``."""
    return Path(RunLayout(run_dir).events(rank))


class EventWriter:
    """Appends events to one rank's JSONL file, flushing each line as it is written."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Append: a resumed run continues the same file, so readers see one history.
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        self._torn = not _ends_a_line(self._fd)
        """The file ends inside a line (a write cut short, here or by an earlier attempt)."""
        self.members: tuple[int, ...] | None = None
        """Live membership: the member id of each rank of the current generation. An event's
        ``rank`` is written as its member id, stable across generations (None: as given)."""

    def emit(self, event: TrainerEvent) -> None:
        """Write ``event`` as one line and flush it to the OS; ``DiskFull`` when the disk is."""
        self.emit_all([event])

    def emit_all(self, events: list[TrainerEvent]) -> None:
        """Write ``events`` as lines with one write (a rank's buffered steps); ``DiskFull``
        when the disk is full (what was cut short is left on a line of its own)."""
        if self.members is not None:
            members = self.members
            events = [dataclasses.replace(e, rank=members[e.rank]) for e in events]
        data = "".join(event_to_json(event) + "\n" for event in events).encode("utf-8")
        if self._torn:
            data = b"\n" + data
        if self._fd is None:
            raise ValueError(f"{self.path}: the event log is closed")
        written = 0
        try:
            while written < len(data):
                written += _write(self._fd, data[written:])
        except OSError as exc:
            if written:  # part of it reached the file: it ends inside a line now
                self._torn = data[written - 1:written] != b"\n"
            if is_disk_full(exc):
                raise DiskFull(self.path.parent, f"the {events[-1].kind} event of rank "
                               f"{events[-1].rank} could not be written") from None
            raise
        self._torn = False

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_write = os.write
"""The one system call that writes events (a test cuts it short as a full disk does)."""


def _ends_a_line(fd: int) -> bool:
    """Whether the file ``fd`` is empty or its last byte ends a line."""
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"
