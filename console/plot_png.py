"""``corral report --plot FILE.png``: loss, each eval metric, throughput and per-rank share
over steps, each quantity on its own axes.

Needs matplotlib (the ``plot`` extra: ``pip install 'corral[plot]'``); without it the command
says so and how to get it. Several runs share the axes, one colour per run; the ranks' share
lines differ in line style and marker too, so equal shares (lines on top of each other) stay
apart to the eye.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from figures import RunSeries
from profiles.user_errors import UsageError
from remote.api import RunSummary

MISSING = ("matplotlib is not installed; install the plot extra (pip install "
           "'corral[plot]', or pip install matplotlib) or use --chart for a terminal plot")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UsageError(MISSING, title="no matplotlib") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


RANK_STYLES = ("-", "--", "-.", ":")
RANK_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MARKS_PER_LINE = 12
"""Markers drawn along a share line (each rank's shifted, so equal lines show every marker)."""


def write_plot(path: Path, runs: Sequence[tuple[RunSummary, RunSeries]]) -> Path:
    """Draw the runs into ``path`` (PNG); the path written."""
    if path.suffix.lower() != ".png":
        raise UsageError(f"--plot {path}: give a file name ending in .png", title="bad plot file")
    plt = _pyplot()
    figure = draw(plt, runs)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp.png")  # renamed once whole: never half a file
    figure.savefig(partial, dpi=100)
    plt.close(figure)
    partial.replace(path)
    return path


def draw(plt: Any, runs: Sequence[tuple[RunSummary, RunSeries]]) -> Any:
    """The figure: one axes per quantity (the training loss with the eval loss, then every
    other eval metric, samples/s with its ideal, each rank's share), sharing the step axis."""
    metrics = sorted({name for _, series in runs for name in series.eval if name != "loss"})
    labels = ["loss", *(f"eval {name}" for name in metrics), "samples/s",
              "share of global batch"]
    figure, axes = plt.subplots(len(labels), 1, figsize=(9, 2.6 * len(labels)), sharex=True,
                                squeeze=False)
    by_label = dict(zip(labels, axes[:, 0], strict=True))
    for summary, series in runs:
        label = summary.name or summary.run_id
        colour = by_label["loss"].plot(series.steps, _nan(series.loss),
                                       label=f"{label} training")[0]\
            .get_color()
        for name, points in series.eval.items():
            axis = by_label["loss" if name == "loss" else f"eval {name}"]
            axis.plot([s for s, _ in points], [v for _, v in points], "o--", color=colour,
                      label=f"{label} eval {name}")
        rate_ax = by_label["samples/s"]
        rate_ax.plot(series.steps, _nan(series.samples_per_s), color=colour, label=label)
        rate_ax.plot(series.steps, _nan(series.ideal), ":", color=colour,
                     label=f"{label} ideal")
        _shares(by_label["share of global batch"], series, label,
                colour if len(runs) > 1 else None)
    for name, axis in by_label.items():
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:  # a run with no steps draws nothing
            axis.legend(fontsize="small")
    axes[-1, 0].set_xlabel("step")
    figure.tight_layout()
    return figure


def _shares(axis: Any, series: RunSeries, label: str, colour: str | None) -> None:
    """Each rank's share: its own line style and marker (and colour, for one run), the
    markers of rank r shifted by r so that equal shares still show every rank's."""
    ranks = sorted(series.shares)
    spacing = max(len(ranks), len(series.steps) // MARKS_PER_LINE, 1)
    for index, rank in enumerate(ranks):
        offset = index * spacing // max(1, len(ranks))
        axis.plot(series.steps, _nan(series.shares[rank]), label=f"{label} rank {rank}",
                  linestyle=RANK_STYLES[index % len(RANK_STYLES)],
                  marker=RANK_MARKERS[index % len(RANK_MARKERS)], markevery=(offset, spacing),
                  markersize=5, color=colour)


def _nan(values: Sequence[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]
