"""A rank's event log: where it is (``events_path``) and its one writer (``EventWriter``): one
JSON line per event (``trainer/events/``), flushed as written, a full disk named.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import IO

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
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self.members: tuple[int, ...] | None = None
        """Live membership: the member id of each rank of the current generation. An event's
        ``rank`` is written as its member id, stable across generations (None: as given)."""

    def emit(self, event: TrainerEvent) -> None:
        """Write ``event`` as one line and flush it to the OS; ``DiskFull`` when the disk is."""
        self.emit_all([event])

    def emit_all(self, events: list[TrainerEvent]) -> None:
        """Write ``events`` as lines with one flush (a rank's buffered steps); ``DiskFull``
        when the disk is full."""
        if self.members is not None:
            members = self.members
            events = [dataclasses.replace(e, rank=members[e.rank]) for e in events]
        try:
            self._file.write("".join(event_to_json(event) + "\n" for event in events))
            self._file.flush()
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull(self.path.parent, f"the {events[-1].kind} event of rank "
                               f"{events[-1].rank} could not be written") from None
            raise

    def close(self) -> None:
        """Close the file (idempotent)."""
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
