"""Header: cluster, run id and state; progress bar with step, epoch, ETA, loss, the latest
evaluation and its trend, and elapsed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text
from textual.widget import Widget

from console.baseline_text import baseline_parts, low_parts
from console.formatting import bar, fmt_duration, fmt_rate
from console.model.run import RunModel
from trainer.events import EvalEvent

STATE_STYLES = {
    "idle": "grey50", "checking": "cyan", "pushing": "cyan", "launching": "cyan",
    "running": "bold green", "stopping": "yellow", "completed": "bold blue",
    "failed": "bold red", "stopped": "yellow",
}


def title_line(model: RunModel) -> Text:
    """``corral · lab · [name ·] run lab-0412 · ● running · detail``."""
    text = Text("corral", style="bold")
    text.append(f" · {model.cluster_name}")
    if model.run_name:
        text.append(f" · {model.run_name}", style="bold")
    text.append(f" · run {model.run_id}" if model.run_id else " · no run")
    text.append(" · ")
    text.append(f"● {model.state}", style=STATE_STYLES.get(model.state, ""))
    if model.state_detail:  # its first line: the logs panel holds the whole text
        first, *more = model.state_detail.strip().splitlines() or [""]
        text.append(f" · {first}" + (" … (the logs panel has the rest)" if more else ""),
                    style="grey50")
    return text


def live_parts(model: RunModel, now: float) -> list[str]:
    """``step 123/400  ep 2  ETA 2m05s  loss 0.423  92% of Σ solo  1.41× fastest  elapsed
    1m12s``: where a run is now."""
    total = model.total_steps
    parts = [f"step {model.step}/{total}" if total else f"step {model.step}"]
    if model.plain_script:  # no length, no loss: its steps and their pace
        return [*parts, f"{fmt_rate(model.samples_per_s)} samples/s",
                f"elapsed {fmt_duration(model.elapsed_s(now))}"]
    if model.steps_per_epoch:
        parts.append(f"ep {model.epoch}")
    parts.append(f"ETA {fmt_duration(model.eta_s)}")
    parts.append("loss —" if model.loss is None else f"loss {model.loss:.4g}")
    if model.evals:
        parts.append(eval_summary(model.evals))
    baseline = model.baseline
    parts += baseline_parts(baseline)
    parts.append(f"elapsed {fmt_duration(model.elapsed_s(now))}")
    return parts + low_parts(baseline)


def finished_parts(model: RunModel, now: float) -> list[str]:
    """``300/300 steps in 1m23s  mean 812 samples/s  92% of Σ solo  1.41× fastest  loss
    0.201 (best 0.199)``: the whole run's totals and averages, once it has ended."""
    total = f"/{model.total_steps}" if model.total_steps else ""
    parts = [f"{model.step}{total} steps in {fmt_duration(model.elapsed_s(now))}",
             f"mean {fmt_rate(model.samples_per_s)} samples/s", *baseline_parts(model.baseline)]
    loss = model.figures.loss
    if loss is not None:
        parts.append(f"loss {loss.final:.4g}" + (
            f" (best {loss.best:.4g})" if loss.best_step != loss.final_step else ""))
    if model.evals:
        parts.append(eval_summary(model.evals))
    return parts + low_parts(model.baseline)


def progress_line(model: RunModel, now: float, width: int) -> Text:
    """``[████▌    ] 31%  step 123/400 ...``: progress and where the run is (its totals and
    averages once it has ended)."""
    parts = finished_parts(model, now) if model.finished else live_parts(model, now)
    tail = "  " + "  ".join(parts)
    if model.figures.first_start is not None and not model.total_steps:
        return Text(tail.strip())  # its length unknown (a plain script): no bar, no percent
    fraction = model.progress or 0.0
    bar_width = max(5, width - len(tail) - 7)
    text = Text("[")
    text.append(bar(fraction, bar_width), style="green")
    text.append(f"] {fraction * 100:3.0f}%")
    text.append(tail)
    return text


SHORT_METRIC_NAMES = {"accuracy": "acc", "perplexity": "ppl"}


def eval_summary(evals: Sequence[EvalEvent]) -> str:
    """``eval 0.412↓ acc 83.1%↑`` (or ``ppl``, and every other metric the task reports): the
    latest values, arrows against the last evaluation before it (→ for no change)."""
    latest = evals[-1].all_metrics()
    before = evals[-2].all_metrics() if len(evals) > 1 else {}

    def trend(name: str) -> str:
        now, then = latest.get(name), before.get(name)
        if now is None or then is None or now == then:
            return "→" if then is not None else ""
        return "↑" if now > then else "↓"

    text = "eval —" if "loss" not in latest else f"eval {latest['loss']:.4g}{trend('loss')}"
    for name, value in latest.items():
        if name != "loss":
            shown = f"{value:.1%}" if name == "accuracy" else f"{value:.4g}"
            text += f" {SHORT_METRIC_NAMES.get(name, name)} {shown}{trend(name)}"
    return text


class RunHeader(Widget):
    """Two lines at the top of the screen; redrawn by the app's refresh timer."""

    DEFAULT_CSS = "RunHeader { height: 2; dock: top; background: $panel; }"

    def __init__(self, model: RunModel, clock: Callable[[], float], *,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.clock = clock
        self._shown = ""

    def sync(self) -> None:
        """Redraw if the text changed (elapsed time moves once a second)."""
        text = self.render().plain
        if text != self._shown:
            self._shown = text
            self.refresh()

    def render(self) -> Text:
        return header_text(self.model, self.clock(), self.size.width)


def header_text(model: RunModel, now: float, width: int) -> Text:
    """The header's two lines, each cut at the screen's edge with an ellipsis: a long state
    detail (a push error) never wraps onto the progress line, out of the header's two rows."""
    return Text("\n", no_wrap=True, overflow="ellipsis").join(
        [title_line(model), progress_line(model, now, width)])
