"""Where a rank's output line goes in the console's log buffer: a progress bar's new state
takes the place of its earlier one, and a line several ranks printed alike is one entry
(``ranks 0–7 text``), as ``corral logs`` folds them (``remote.terminal_text.fold_ranks``).

Headless: positions only, counted from the run's first line (``RunModel.logs_total``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from remote.api import LogLine, ranks_label

FOLD_WINDOW = 5000
"""Lines back within which identical lines of other ranks fold into one entry (the buffer's
size: a line no longer kept starts a new entry)."""


class Placed(NamedTuple):
    """What to do with a line: append it (``entry`` None) or replace entry ``entry`` (a
    position counted from the run's first line) with ``source`` and the line's text."""

    entry: int | None
    source: str


@dataclass
class LogPlaces:
    """The bookkeeping behind ``place``: each rank's newest bar entry, and for identical
    lines the entry the n-th of them went to and the ranks it holds."""

    _bars: dict[tuple[str, int | None], int] = field(default_factory=dict)
    _said: dict[tuple[int, str], int] = field(default_factory=dict)
    _folded: dict[tuple[str, int], tuple[int, tuple[int, ...]]] = field(default_factory=dict)
    _labels: dict[tuple[str, int | None], str] = field(default_factory=dict)
    """Each host's and rank's ``host:rank`` label, made once (a flood asks per line)."""

    def place(self, line: LogLine, total: int) -> Placed:
        """Where ``line`` goes when ``total`` lines were added before it (its index if
        appended)."""
        host, rank, text = line.host, line.rank, line.text
        own = self._labels.get((host, rank))
        if own is None:
            own = self._labels[(host, rank)] = f"{host}:{'launcher' if rank is None else rank}"
        if line.bar:
            where = self._bars.get((host, rank))
            if line.replaces and where is not None and where >= total - FOLD_WINDOW:
                return Placed(where, own)
            self._bars[(host, rank)] = total
            return Placed(None, own)
        if rank is None or not text or text.isspace():
            return Placed(None, own)
        if len(self._folded) > 2 * FOLD_WINDOW:
            self._forget(total - FOLD_WINDOW)
        said = (rank, text)
        nth = self._said.get(said, 0)
        self._said[said] = nth + 1
        key = (text, nth)
        found = self._folded.get(key)
        if found is not None and found[0] >= total - FOLD_WINDOW and rank not in found[1]:
            where, ranks = found
            ranks = (*ranks, rank)
            self._folded[key] = (where, ranks)
            return Placed(where, ranks_label(ranks))
        self._folded[key] = (total, (rank,))
        return Placed(None, own)

    def _forget(self, oldest: int) -> None:
        """Drop what refers to entries no longer kept (a long run's memory stays bounded)."""
        self._folded = {k: v for k, v in self._folded.items() if v[0] >= oldest}
        texts = {text for text, _ in self._folded}
        self._said = {k: v for k, v in self._said.items() if k[1] in texts}
