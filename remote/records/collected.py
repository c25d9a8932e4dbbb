"""This machine's copy of a run's files on each host: ``<run dir>/collected/<host>/``.

The follower (``remote.run.stream``) appends every line it receives to the copy and records the
byte offset reached in each host file, so a later follower continues from there without
duplicates or gaps; ``corral report``, TensorBoard and a replayed run read the copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

from profiles.user_errors import CorralError
from remote.records.private import open_private, private_dir, write_private
from trainer.events import TrainerEvent
from trainer.run_layout import RunLayout


class CollectedCopy:
    """This machine's copy of one host's files of a run, with the offsets reached."""

    def __init__(self, local_run_dir: Path, host: str) -> None:
        self.root = Path(RunLayout(local_run_dir).collected(host))
        self.offsets: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self.saved: dict[str, int] = {}
        """Per copied file: its bytes the saved offsets account for (what a follower showed;
        a seat's replay of the record reads up to them, ``remote.records.replay``). For a
        second follower (not the ``writer``): the bytes the lines it read make in the copy,
        as of its last ``save`` (its next attempt's replay goes on from there)."""
        self._files: dict[str, IO[bytes]] = {}
        self.on_line: Callable[[str, str, TrainerEvent | None], None] | None = None
        """Called with ``(path, text, typed event or None)`` for each line this copy appends
        (TensorBoard, the trackers)."""
        self.write_error: str | None = None
        """Why this machine could not write the copy (or what it feeds), first time: the run
        directory read-only, full or gone. The copy then only counts offsets, and the follower
        ends the run (``remote.run.follower``) rather than the tail calling its host lost."""
        private_dir(local_run_dir)
        private_dir(self.root)
        # One writer per copy: a second follower of the same run (another terminal, the
        # console) follows from the saved offsets but leaves the copy to the first.
        self._lock: IO[bytes] | None = open_private(self.root / RunLayout.COPY_LOCK)
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
        self._load()

    @property
    def writer(self) -> bool:
        """True when this follower owns the copy (it appends lines and saves offsets)."""
        return self._lock is not None

    def _load(self) -> None:
        saved: dict[str, list[int]] = {}
        with contextlib.suppress(OSError, ValueError):
            offsets_file = self.root / RunLayout.COPY_OFFSETS
            saved = json.loads(offsets_file.read_text(encoding="utf-8"))["files"]
        for path, (offset, size) in saved.items():
            self.offsets[path], self._sizes[path] = int(offset), int(size)
        self.saved = dict(self._sizes)
        if not self.writer:
            return
        # Cut every copied file back to what the saved offsets account for.
        for file in self.root.rglob("*"):
            rel = file.relative_to(self.root).as_posix()
            if (file.is_file() and rel not in (RunLayout.COPY_OFFSETS, RunLayout.COPY_LOCK)
                    and not rel.endswith(".tmp")):
                keep = self._sizes.get(rel, 0)
                if file.stat().st_size != keep:
                    with open(file, "r+b") as handle:
                        handle.truncate(keep)

    def _safe(self, path: str) -> Path:
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root.resolve()) or path.startswith("/"):
            raise CorralError(f"refusing to copy {path!r} outside {self.root}")
        return target

    def append(self, path: str, text: str, end_offset: int,
               event: TrainerEvent | None = None) -> None:
        """Copy one received line of the host's ``path`` that ends at ``end_offset`` (``event``:
        the line's typed event when the caller parsed it already)."""
        self.offsets[path] = end_offset
        data = (text + "\n").encode("utf-8", "replace")
        if not self.writer:  # the size the writer's copy gets: what this follower showed
            self._sizes[path] = self._sizes.get(path, 0) + len(data)
        if not self.writer or self.write_error is not None:
            return
        try:
            handle = self._files.get(path)
            if handle is None:
                target = self._safe(path)
                private_dir(target.parent)
                handle = self._files[path] = open_private(target)
            handle.write(data)
            self._sizes[path] = self._sizes.get(path, 0) + len(data)
            if self.on_line is not None:
                self.on_line(path, text, event)
        except OSError as exc:
            self._write_failed(exc)

    def raise_offsets(self, remote_sizes: dict[str, int]) -> None:
        """Skip what the host's files hold already (a resumed run's earlier history)."""
        for path, size in remote_sizes.items():
            if size > self.offsets.get(path, 0):
                self.offsets[path] = size
                self._sizes.setdefault(path, 0)
        self.save()

    def save(self) -> None:
        """Flush the copied lines, then record the offsets they reach (atomically); a second
        follower only counts what it read (``saved``)."""
        if not self.writer:
            self.saved = dict(self._sizes)
            return
        if self.write_error is not None:
            return
        tmp = self.root / f".{RunLayout.COPY_OFFSETS}.{os.getpid()}.tmp"
        try:
            for handle in self._files.values():
                handle.flush()
            files = {p: [self.offsets[p], self._sizes.get(p, 0)] for p in self.offsets}
            write_private(tmp, json.dumps({"files": files}))
            os.replace(tmp, self.root / RunLayout.COPY_OFFSETS)
            self.saved = {p: size for p, (_, size) in files.items()}
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self._write_failed(exc)

    def _write_failed(self, exc: OSError) -> None:
        """Stop writing: the offsets saved so far stay true (a later follower sends the rest
        again), the files are closed as they are."""
        where = exc.filename if isinstance(exc.filename, str) else str(self.root)
        self.write_error = f"{where}: {exc.strerror or exc}"
        self.on_line = None
        for handle in self._files.values():
            with contextlib.suppress(OSError):
                handle.close()
        self._files.clear()

    def close(self) -> None:
        """Close every copied file (the offsets stay as last saved) and release the copy."""
        for handle in self._files.values():
            try:
                handle.close()  # its last flush
            except OSError as exc:
                self.write_error = self.write_error or f"{handle.name}: {exc.strerror or exc}"
        self._files.clear()
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None
