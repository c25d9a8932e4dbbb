"""``corral report --plot FILE.png``: loss, throughput and per-rank share over steps.

Needs matplotlib (the ``plot`` extra: ``pip install 'corral[plot]'``); without it the command
says so and how to get it. Several runs share the axes, one colour per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from profiles.user_errors import UsageError
from remote.api import RunSeries, RunSummary

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


def write_plot(path: Path, runs: Sequence[tuple[RunSummary, RunSeries]]) -> Path:
    """Draw the runs' loss, throughput and shares into ``path`` (PNG); the path written."""
    if path.suffix.lower() != ".png":
        raise UsageError(f"--plot {path}: give a file name ending in .png", title="bad plot file")
    plt = _pyplot()
    figure, (loss_ax, rate_ax, share_ax) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for summary, series in runs:
        label = summary.name or summary.run_id
        line = loss_ax.plot(series.steps, _nan(series.loss), label=label)[0]
        for name, points in series.eval.items():
            loss_ax.plot([s for s, _ in points], [v for _, v in points], "o--",
                         color=line.get_color(), label=f"{label} eval {name}")
        rate_ax.plot(series.steps, _nan(series.samples_per_s), color=line.get_color(),
                     label=label)
        rate_ax.plot(series.steps, _nan(series.ideal), ":", color=line.get_color(),
                     label=f"{label} ideal")
        for rank, shares in series.shares.items():
            share_ax.plot(series.steps, _nan(shares), label=f"{label} rank {rank}")
    loss_ax.set_ylabel("loss")
    rate_ax.set_ylabel("samples/s")
    share_ax.set_ylabel("share of global batch")
    share_ax.set_xlabel("step")
    for axis in (loss_ax, rate_ax, share_ax):
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:  # a run with no steps draws nothing
            axis.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp.png")  # renamed once whole: never half a file
    figure.savefig(partial, dpi=100)
    plt.close(figure)
    partial.replace(path)
    return path


def _nan(values: Sequence[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]
