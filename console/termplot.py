"""Line charts drawn with text: braille dots, a labelled y axis and the x axis's steps.

Used by ``corral report --chart`` and by the console's loss panel, so a plot needs nothing but
a terminal. Each cell holds 2 × 4 braille dots; several series share one chart, each in its
own colour (a cell two series pass through takes the colour of the later one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

AXIS_STYLE = "grey50"
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
"""Braille dot bits by [column within the cell][row from the top]."""


@dataclass(frozen=True)
class Line:
    """One series: a value per x (None where there is none) and its colour."""

    label: str
    values: Sequence[float | None]
    style: str


def axis_number(value: float) -> str:
    """A short axis label: ``0.0123``, ``4.56``, ``812``, ``12.3k``."""
    size = abs(value)
    if size >= 10_000:
        return f"{value / 1000:.0f}k"
    if size >= 1000:
        return f"{value / 1000:.1f}k"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 1 or value == 0:
        return f"{value:.3g}"
    return f"{value:.2g}"


def _bounds(lines: Sequence[Line]) -> tuple[float, float] | None:
    values = [v for line in lines for v in line.values if v is not None and math.isfinite(v)]
    if not values:
        return None
    low, high = min(values), max(values)
    if high - low < 1e-12:
        pad = abs(high) * 0.05 or 1.0
        low, high = low - pad, high + pad
    return low, high


def _columns(values: Sequence[float | None], dots_wide: int) -> list[float | None]:
    """``values`` resampled to ``dots_wide`` points (the mean of each bucket)."""
    count = len(values)
    out: list[float | None] = []
    for x in range(dots_wide):
        lo = x * count // dots_wide
        hi = max(lo + 1, (x + 1) * count // dots_wide)
        bucket = [v for v in values[lo:hi] if v is not None and math.isfinite(v)]
        out.append(sum(bucket) / len(bucket) if bucket else None)
    return out


def _grid(lines: Sequence[Line], width: int, height: int, low: float, high: float,
          ) -> tuple[list[list[int]], list[list[str]]]:
    bits = [[0] * width for _ in range(height)]
    styles = [[""] * width for _ in range(height)]
    dot_rows = height * 4  # a braille cell is 4 dots high and 2 wide
    for line in lines:
        for x, value in enumerate(_columns(line.values, width * 2)):
            if value is None:
                continue
            level = round((value - low) / (high - low) * (dot_rows - 1))
            y = dot_rows - 1 - max(0, min(dot_rows - 1, level))
            cell_y, cell_x = y // 4, x // 2
            bits[cell_y][cell_x] |= _DOTS[x % 2][y % 4]
            styles[cell_y][cell_x] = line.style
    return bits, styles


def chart(lines: Sequence[Line], xs: Sequence[int], width: int, height: int) -> list[Text]:
    """The chart in ``width`` × ``height`` cells: y labels, the plot, the x axis and the
    first and last x. Empty lines when there is nothing to draw yet."""
    label_width = 7
    plot_width, plot_height = width - label_width - 1, height - 2
    if plot_width < 4 or plot_height < 1:
        return [Text(" " * max(0, width)) for _ in range(max(0, height))]
    bounds = _bounds(lines)
    if bounds is None or not xs:
        blank = Text(" " * label_width + "│", style=AXIS_STYLE)
        return [blank.copy() for _ in range(plot_height)] + [
            Text(" " * label_width + "└" + "─" * plot_width, style=AXIS_STYLE),
            Text("(no steps yet)".center(width), style=AXIS_STYLE)]
    low, high = bounds
    bits, styles = _grid(lines, plot_width, plot_height, low, high)
    out = []
    for row in range(plot_height):
        label = ""
        if row == 0:
            label = axis_number(high)
        elif row == plot_height - 1:
            label = axis_number(low)
        elif row == plot_height // 2 and plot_height >= 5:
            label = axis_number((low + high) / 2)
        text = Text(label.rjust(label_width)[-label_width:] + "┤", style=AXIS_STYLE)
        for col in range(plot_width):
            text.append(chr(0x2800 + bits[row][col]) if bits[row][col] else " ",
                        style=styles[row][col])
        out.append(text)
    out.append(Text(" " * label_width + "└" + "─" * plot_width, style=AXIS_STYLE))
    first_step, last_step = f"step {xs[0]}", str(xs[-1])
    gap = max(1, width - label_width - len(first_step) - len(last_step))
    out.append(Text(" " * label_width + first_step + " " * gap + last_step, style=AXIS_STYLE))
    return out


def legend(lines: Sequence[Line]) -> Text:
    """``● loss  ● eval loss``, each dot in its series' colour."""
    text = Text()
    for line in lines:
        if text:
            text.append("  ")
        text.append("● ", style=line.style)
        text.append(line.label)
    return text
