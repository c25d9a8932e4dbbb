"""The logs panel's screen rows, wrapped only when drawn.

A flood of rank output (3 ranks × 3,000 lines a second) is far more than the panel shows: the
rows of a line are counted from its length at once (for the scroll bar and the view's
place), and built as text only for the rows on screen (a few hundred lines of them kept).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import overload

from rich.cells import cell_len
from rich.text import Text

from console.model.records import LogEntry
from remote.api import plain

CONTINUATION_INDENT = 2
"""Cells a wrapped line's continuation rows are indented by."""
KEPT_ENTRIES = 512
"""Lines whose built rows are kept (the screen's, and a scroll's worth around them)."""


def wrapped_rows(row: Text, width: int) -> list[Text]:
    """``row`` as screen rows of at most ``width`` cells, the continuation rows indented."""
    if row.cell_len <= width or width <= 2 * CONTINUATION_INDENT:
        return [row]
    rows = [row[:width]]
    rest = row[width:]
    step = width - CONTINUATION_INDENT
    while rest.cell_len > 0:
        piece = Text(" " * CONTINUATION_INDENT)
        piece.append_text(rest[:step])
        rows.append(piece)
        rest = rest[step:]
    return rows


def row_count(line: str, width: int) -> int:
    """How many rows ``wrapped_rows`` makes of a row whose text is ``line`` (no colours):
    it cuts by characters once the cells exceed the width."""
    if width <= 2 * CONTINUATION_INDENT:
        return 1
    if (len(line) if line.isascii() else cell_len(line)) <= width:
        return 1
    rest = len(line) - width
    step = width - CONTINUATION_INDENT
    return 1 + max(0, -(-rest // step))


class LazyRows(Sequence[Text]):
    """The screen rows of ``entries`` at ``width``: counted at once, built when read."""

    def __init__(self, make: Callable[[LogEntry], Text]) -> None:
        self._make = make
        self._entries: list[LogEntry] = []
        self._starts: list[int] = [0]
        self._built: OrderedDict[int, list[Text]] = OrderedDict()
        self.width = 1

    def reset(self, entries: Sequence[LogEntry], width: int) -> None:
        """Rows of ``entries`` at ``width`` (nothing built yet)."""
        self._entries, self._starts, self.width = [], [0], width
        self._built.clear()
        self.extend(entries)

    def extend(self, entries: Sequence[LogEntry]) -> None:
        """Rows of more entries after these."""
        total, width = self._starts[-1], self.width
        for entry in entries:
            total += row_count(f"{entry.source} {plain(entry.text)}", width)
            self._starts.append(total)
        self._entries.extend(entries)

    def __len__(self) -> int:
        return self._starts[-1]

    @overload
    def __getitem__(self, index: int) -> Text: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Text]: ...

    def __getitem__(self, index: int | slice) -> Text | Sequence[Text]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        at = bisect.bisect_right(self._starts, index) - 1
        rows = self._rows(at)
        offset = index - self._starts[at]
        return rows[offset] if offset < len(rows) else Text("")

    def __iter__(self) -> Iterator[Text]:
        return (self[i] for i in range(len(self)))

    def _rows(self, at: int) -> list[Text]:
        rows = self._built.get(at)
        if rows is None:
            rows = wrapped_rows(self._make(self._entries[at]), self.width)
            self._built[at] = rows
            if len(self._built) > KEPT_ENTRIES:
                self._built.popitem(last=False)
        else:
            self._built.move_to_end(at)
        return rows
