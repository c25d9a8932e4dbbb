"""Throughput panel: cluster samples/s over time against the ideal, and per-rank sparklines."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical

from console.formatting import cells, fmt_percent, fmt_rate, sparkline
from console.model.records import ThroughputPoint
from console.model.run import RunModel
from console.widgets.lines_view import LinesView
from console.widgets.packing import label_cells, line_count, packed_line, per_line

MEASURED_STYLE = "green"
IDEAL_STYLE = "yellow"
CHANGE_STYLE = "magenta"
"""The mark of a change of the run's hosts (a live join or leave) above its first step."""
SPARK_LEAST, RATE_CELLS = 4, 5
"""A rank's row: its sparkline's fewest cells, its rate's cells."""
CHART_HALF_FROM = 10
"""Panel lines from which the chart keeps half the panel (below: its summary and one row)."""
_EIGHTHS = " ▁▂▃▄▅▆▇█"
"""A cell filled from the bottom, by eighths (0: empty, 8: full)."""


def summary_line(model: RunModel, width: int = 80) -> Text:
    """``812 samples/s  ideal 950  compute share 85%`` (``812/s  ideal 950/s  share 85%``
    when narrow): the ideal and the share are the ranks' own (no waiting), not the hosts'
    alone (the header's % of Σ solo)."""
    unit = " samples/s" if width >= 42 else "/s"
    text = Text("mean " if model.finished else "")  # a whole run's average, once it ended
    text.append(fmt_rate(model.samples_per_s) + unit, style=f"bold {MEASURED_STYLE}")
    text.append("  ideal ")
    text.append(fmt_rate(model.ideal_samples_per_s) + ("" if width >= 42 else "/s"),
                style=IDEAL_STYLE)
    text.append("  compute share " if width >= 42 else "  share ")
    text.append(fmt_percent(model.efficiency), style="bold")
    return text


def change_steps(model: RunModel) -> frozenset[int]:
    """The first step of each new membership generation (a host joined or left live)."""
    return frozenset(g.step + 1 for g in model.figures.generations if g.change != "refused")


def chart_lines(points: Sequence[ThroughputPoint], width: int, height: int,
                changes: frozenset[int] = frozenset()) -> list[Text]:
    """Measured throughput as bars (one column per step, newest right), ideal as a line; a
    step in ``changes`` (the hosts changed before it) gets a mark above its bar."""
    if width <= 0 or height <= 0:
        return []
    points = list(points)[-width:]
    if not points:
        return [Text(" " * width) for _ in range(height)]
    top = max(max(p.samples_per_s for p in points),
              max((p.ideal or 0.0) for p in points)) * 1.05 or 1.0
    bar_eighths = [round(p.samples_per_s / top * height * 8) for p in points]
    ideal_rows = [None if p.ideal is None else min(height - 1, int(p.ideal / top * height))
                  for p in points]
    marked = [p.step in changes for p in points]
    lines = []
    for row in range(height - 1, -1, -1):
        glyphs = []
        styled: list[tuple[int, str]] = []
        for x, (eighths, ideal_row) in enumerate(zip(bar_eighths, ideal_rows, strict=True)):
            fill = max(0, min(8, eighths - row * 8))
            if fill == 0 and ideal_row == row:
                glyphs.append("─")
                styled.append((x, IDEAL_STYLE))
            elif fill == 0 and marked[x]:
                glyphs.append("┊")
                styled.append((x, CHANGE_STYLE))
            else:
                glyphs.append(_EIGHTHS[fill])
        line = Text("".join(glyphs).ljust(width), style=MEASURED_STYLE)
        for x, style in styled:
            line.stylize(style, x, x + 1)
        lines.append(line)
    return lines


class ThroughputChart(LinesView):
    """The chart part: summary line, then bars and ideal line filling the widget."""

    DEFAULT_CSS = "ThroughputChart { height: 2fr; min-height: 3; overflow-y: hidden; }"

    def __init__(self, model: RunModel, *, id: str | None = None) -> None:
        super().__init__(row_count=lambda: self.size.height, row_text=self._chart_line,
                         signature=self._signature, id=id)
        self.model = model
        self._lines: list[Text] = []
        self._lines_key: object = None
        self.can_focus = False

    def _signature(self) -> object:
        history = self.model.history
        return (len(history), history[-1] if history else None,
                self.model.ideal_samples_per_s, len(self.model.figures.generations))

    def _chart_line(self, index: int, width: int) -> Text:
        key = (self._signature(), width, self.size.height)
        if key != self._lines_key:
            self._lines_key = key
            self._lines = [summary_line(self.model, width), *chart_lines(
                self.model.history, width, self.size.height - 1, change_steps(self.model))]
        return self._lines[index].copy() if index < len(self._lines) else Text()


def spark_row(model: RunModel, index: int, width: int) -> Text:
    """``beta:1 ▂▃▅▆▇ 48.2``: one rank's recent samples/s."""
    ranks = model.ranks_in_run()  # a rank that left is no longer part of the pace
    row = ranks[index]
    label = label_cells([f"{r.host}:{r.rank}" for r in ranks])
    spark_width = max(SPARK_LEAST, width - label - RATE_CELLS - 2)
    return cells((f"{row.host}:{row.rank}", label, "left"),
                 (Text(sparkline(row.history, spark_width), style=MEASURED_STYLE), spark_width,
                  "left"), (fmt_rate(row.samples_per_s), RATE_CELLS, "right"))


def spark_least(model: RunModel) -> int:
    """The fewest cells a rank's sparkline row reads in: its label, a short spark, its rate."""
    labels = [f"{r.host}:{r.rank}" for r in model.ranks_in_run()]
    return label_cells(labels) + SPARK_LEAST + RATE_CELLS + 2


def spark_lines(inner: int) -> int:
    """Lines the sparklines may take of a panel ``inner`` lines high: all but the chart's
    least (its summary line and a row of bars; on a tall panel, half)."""
    return max(1, inner - (2 if inner < CHART_HALF_FROM else inner // 2))


class ThroughputPanel(Vertical):
    """Cluster throughput with its ideal and compute share, and every rank's sparkline (several
    to a line when one a line would not fit: every rank stays in view)."""

    def __init__(self, model: RunModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.border_title = "Throughput"
        self._per_line = 1
        self._spark_height = -1

    def compose(self) -> ComposeResult:
        yield ThroughputChart(self.model, id="throughput-chart")
        yield LinesView(row_count=lambda: line_count(len(self.model.ranks_in_run()),
                                                     self._per_line),
                        row_text=self._spark_line, id="rank-sparks")

    def _spark_line(self, index: int, width: int) -> Text:
        return packed_line(index, self._per_line, len(self.model.ranks_in_run()), width,
                           lambda i, w: spark_row(self.model, i, w))

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """Ranks per line and the sparklines' height for the panel's size and ranks."""
        size = self.content_size
        if size.height <= 0:
            return
        count = len(self.model.ranks_in_run())
        room = spark_lines(size.height)
        self._per_line = per_line(count, room, size.width, spark_least(self.model))
        height = min(room, line_count(count, self._per_line))
        if height != self._spark_height:  # a change re-lays out the screen: only on change
            self._spark_height = height
            self.query_one("#rank-sparks", LinesView).styles.height = height

    def sync(self) -> None:
        """Redraw from the model."""
        self._fit()
        self.query_one(ThroughputChart).sync()
        self.query_one("#rank-sparks", LinesView).sync()
