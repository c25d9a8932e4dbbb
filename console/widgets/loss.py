"""Loss panel: the global training loss (and any eval metric) over steps, with axes."""

from __future__ import annotations

from rich.text import Text

from console.formatting import OPT_IN_HINT
from console.model.run import RunModel
from console.termplot import Line, chart, legend
from console.widgets.lines_view import LinesView

LOSS_STYLE = "cyan"
EVAL_STYLES = ("magenta", "yellow", "red")


def loss_lines(model: RunModel) -> tuple[list[Line], list[int]]:
    """The chart's series on the loss curve's steps: loss, then each eval metric."""
    points = model.figures.loss_points()
    steps = [step for step, _ in points]
    lines = [Line("loss", [value for _, value in points], LOSS_STYLE)]
    for index, (name, curve) in enumerate(sorted(model.figures.eval_points().items())):
        value_at_step = dict(curve)
        lines.append(Line(f"eval {name}", [value_at_step.get(step) for step in steps],
                          EVAL_STYLES[index % len(EVAL_STYLES)]))
    return lines, steps


def title_line(model: RunModel, lines: list[Line] | None = None) -> Text:
    """``● loss 0.2012 (best 0.1990 @ 281)  ● eval loss 0.25`` (``lines``: ``loss_lines``'
    series when the caller has them already)."""
    if model.plain_script:  # its loss is the script's own: corral does not read it
        return Text(f"loss unknown: a plain script's loss is its own; {OPT_IN_HINT} "
                    "reports it", style="grey50")
    if lines is None:
        lines, _ = loss_lines(model)
    text = legend(lines[:1])
    loss = model.figures.loss
    if loss is not None:
        text.append(f" {loss.final:.4g}")
        if loss.best_step != loss.final_step:
            text.append(f" (best {loss.best:.4g} @ {loss.best_step})", style="grey50")
    metrics = model.figures.eval_metrics()
    for line, (_, metric) in zip(lines[1:], sorted(metrics.items()), strict=True):
        text.append("  ")
        text.append_text(legend([line]))
        text.append(f" {metric.final:.4g}")
    return text


class LossPanel(LinesView):
    """The loss curve filling the panel, its newest and best value on the first line."""

    def __init__(self, model: RunModel, *, id: str | None = None) -> None:
        super().__init__(row_count=lambda: self.size.height, row_text=self._panel_line,
                         signature=self._signature, id=id)
        self.model = model
        self.border_title = "Loss"
        self._lines: list[Text] = []
        self._lines_key: object = None
        self.can_focus = False

    def _signature(self) -> object:
        return self.model.figures.curves_version

    def _panel_line(self, index: int, width: int) -> Text:
        key = (self._signature(), width, self.size.height)
        if key != self._lines_key:
            self._lines_key = key
            lines, steps = loss_lines(self.model)
            self._lines = [title_line(self.model, lines),
                           *chart(lines, steps, width, self.size.height - 1)]
        return self._lines[index].copy() if index < len(self._lines) else Text()
