"""The logs panel's rows are counted at once and built only when drawn (a flood of rank output
costs the console what the screen shows): the same rows as wrapping every line."""

from __future__ import annotations

import pytest

from console.model.records import LogEntry
from console.widgets.log_rows import LazyRows, wrapped_rows
from console.widgets.logs import log_row

ENTRIES = [
    LogEntry(t=0.0, source="alpha:0", text="short"),
    LogEntry(t=0.0, source="beta:1", text="x" * 130),
    LogEntry(t=0.0, source="ranks 0–2", text="loading the data " * 9),
    LogEntry(t=0.0, source="alpha:0", text="\x1b[32mINFO\x1b[0m " + "coloured " * 12),
    LogEntry(t=0.0, source="gamma:2", text="epoch 0: 100%|██████████| 40/40 " * 3),
    LogEntry(t=0.0, source="gamma:2", text="宽字符" * 30),
    LogEntry(t=0.0, source="alpha:launcher", text=""),
]


@pytest.mark.parametrize("width", [1, 4, 5, 20, 37, 80, 400])
def test_lazy_rows_are_the_wrapped_rows(width: int) -> None:
    eager = [row.plain for e in ENTRIES for row in wrapped_rows(log_row(e), width)]
    lazy = LazyRows(log_row)
    lazy.reset(ENTRIES[:3], width)
    lazy.extend(ENTRIES[3:])
    assert len(lazy) == len(eager)
    assert [row.plain for row in lazy] == eager
    assert lazy[-1].plain == eager[-1]


def test_only_the_rows_read_are_built() -> None:
    built: list[LogEntry] = []

    def make(entry: LogEntry) -> object:
        built.append(entry)
        return log_row(entry)

    lazy = LazyRows(make)  # type: ignore[arg-type]
    lazy.reset([LogEntry(t=0.0, source="a:0", text=f"line {i}") for i in range(10_000)], 80)
    assert len(lazy) == 10_000 and built == []
    assert [row.plain for row in lazy[-3:]] == ["a:0 line 9997", "a:0 line 9998", "a:0 line 9999"]
    assert len(built) == 3
