"""A run's record replayed to a seat that opens on it: what this machine's copy holds.

Every seat (the launching console, ``corral attach``, a ``--serve`` tab, a resumed launch) shows
the run folded from its whole record — every rank's events from the run's first line, of
every attempt and every generation, the hosts that left included — and then the live tail.
``RecordReplay`` reads that record in parts: first everything the copy holds, later only what
a follower's offsets reach beyond what was replayed or shown (the lines ``catch_up`` copied
before a relaunch), so a seat folds each line once, as ``corral report`` does.

A line is replayed up to the size the copy's *saved* offsets account for (``CollectedCopy.saved``):
the tail goes on from the host offset saved with that size, so a line is either replayed or
tailed, never both, never neither — also for a second follower while the first one writes on.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path

from remote.records.history import Recorded, parse_line
from trainer.run_layout import EVENTS_NAME, RunLayout

Sizes = Mapping[str, int]
"""Per path in a host's copy (``metrics/rank-0.jsonl``): the bytes of it that count."""


def saved_sizes(host_copy: Path) -> dict[str, int]:
    """The copied bytes of each file of one host's copy that its saved offsets account for
    (``collected/<host>/offsets.json``; empty when none were saved)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        files = json.loads((host_copy / RunLayout.COPY_OFFSETS).read_text("utf-8"))["files"]
        return {str(path): int(pair[1]) for path, pair in files.items()}
    return {}


class RecordReplay:
    """The record of one run (its local directory), replayed in parts (``take``)."""

    def __init__(self, local_dir: Path) -> None:
        self.root = Path(RunLayout(local_dir).path(RunLayout.COLLECTED))
        self.done: dict[tuple[str, str], int] = {}
        """Per (host, path): the bytes of the copy already replayed or shown live."""

    def take(self, upto: Mapping[str, Sizes] | None = None) -> list[Recorded]:
        """The event lines not replayed yet, in time order (then rank), up to ``upto[host]``
        for the hosts a follower opened (its copies' ``saved`` sizes), up to the saved offsets
        for every other host of the copy (one that left, or none followed yet)."""
        lines: list[Recorded] = []
        hosts = sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        owner: dict[int, tuple[str, int]] = {}  # a rank copied twice: the longer copy counts
        sized: dict[str, Sizes] = {}
        for host_dir in hosts:
            sizes = sized[host_dir.name] = (upto or {}).get(host_dir.name,
                                                            saved_sizes(host_dir))
            for path, size in sizes.items():
                match = EVENTS_NAME.match(Path(path).name)
                if match and path.startswith(f"{RunLayout.METRICS}/"):
                    rank = int(match.group(1))
                    if size > owner.get(rank, ("", -1))[1]:
                        owner[rank] = (host_dir.name, size)
        for rank, (host, _) in sorted(owner.items()):
            path = f"{RunLayout.METRICS}/rank-{rank}.jsonl"
            lines += self._read(host, rank, path, sized[host][path])
        lines.sort(key=lambda r: (r.t, r.rank))
        return lines

    def _read(self, host: str, rank: int, path: str, size: int) -> list[Recorded]:
        start = self.done.get((host, path), 0)
        if size <= start:
            return []
        try:
            with open(self.root / host / path, "rb") as handle:
                handle.seek(start)
                data = handle.read(size - start)
        except OSError:
            return []
        data = data[:data.rfind(b"\n") + 1]  # a line cut short waits for its end
        self.done[(host, path)] = start + len(data)
        found = (parse_line(host, rank, text) for text in
                 data.decode("utf-8", "replace").splitlines())
        return [line for line in found if line is not None]

    def shown(self, host: str, sizes: Sizes) -> None:
        """A follower showed ``host``'s copy live up to ``sizes`` (its saved sizes at its end):
        the next ``take`` goes on from there."""
        for path, size in sizes.items():
            self.done[(host, path)] = max(self.done.get((host, path), 0), size)
