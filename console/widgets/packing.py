"""Compact rows: a panel's items (one per rank) several to a line when one a line would not fit
its height, so every rank stays in view at 80×24 instead of behind a scrollbar. Throughput's
sparklines and the Balancer's split use it (docs/console.md, "80×24 first")."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text

GAP = 2
"""Cells between two items on one line."""
LABEL_CELLS = 12
"""The widest ``host:rank`` label; a longer one is cut with ``…``."""


def per_line(count: int, lines: int, width: int, least: int) -> int:
    """How many of ``count`` items go on one line of ``width`` cells so that they fit in
    ``lines`` lines, each item at least ``least`` cells wide: 1 while they fit one a line,
    else the fewest that fit, but never more than the width holds (then the rows scroll)."""
    if count <= max(lines, 1):
        return 1
    most = max(1, (width + GAP) // (least + GAP))
    return max(1, min(most, -(-count // max(lines, 1))))


def line_count(count: int, per: int) -> int:
    """Lines that ``count`` items take at ``per`` a line."""
    return -(-count // max(per, 1))


def packed_line(index: int, per: int, count: int, width: int,
                item: Callable[[int, int], Text]) -> Text:
    """Line ``index`` of the items at ``per`` a line (in order, left to right):
    ``item(i, cells)`` draws item ``i`` in its ``cells``; the items share the width."""
    if per <= 1:
        return item(index, width)
    cells = (width - GAP * (per - 1)) // per
    line = Text()
    for i in range(index * per, min(count, (index + 1) * per)):
        if i > index * per:
            line.append(" " * GAP)
        piece = item(i, cells)
        piece.truncate(cells, overflow="ellipsis")
        piece.align("left", cells)
        line.append_text(piece)
    return line


def label_cells(labels: list[str]) -> int:
    """The label column's width: the longest label, at most ``LABEL_CELLS``."""
    return min(LABEL_CELLS, max((len(label) for label in labels), default=4))
