"""What an encoding cannot show is written as ASCII of the same width (``console/terminal.py``):
the console's panels keep their layout under Latin-1, and nothing raises."""

from __future__ import annotations

import io

from rich.cells import cell_len

from console.terminal import ERRORS, ascii_fallbacks, ascii_for, can_show


def test_each_fallback_is_ascii_of_the_same_width() -> None:
    for char in "╭─╮│╰╯┼━┃▏█▁⠀⣿●…→✓—“日é😀":
        shown = ascii_for(char)
        assert shown.isascii() and cell_len(shown) == cell_len(char), (char, shown)
    assert [ascii_for(c) for c in "╭─╮│"] == ["+", "-", "+", "|"]


def test_a_latin1_stream_writes_box_drawing_as_ascii_and_keeps_latin1() -> None:
    assert can_show("utf-8") and not can_show("iso8859-1") and not can_show("ascii")
    ascii_fallbacks()  # registers the handler (the standard streams here: left as they are)
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="iso8859-1", errors=ERRORS)
    stream.write("╭─ loss · 0.5 ─╮ …done é")
    stream.flush()
    assert raw.getvalue().decode("iso8859-1") == "+- loss · 0.5 -+ .done é"
