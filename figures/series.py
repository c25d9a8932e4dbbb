"""Per-step values of a run for plots, read from its reducer (``figures.reducer``).

A relaunched run redoes the steps after its checkpoint; the reducer keeps each step as it
finally ran, so each step appears once.
"""

from __future__ import annotations

from dataclasses import dataclass

from figures.reducer import RunFigures


@dataclass(frozen=True)
class RunSeries:
    """Per-step values for plots: loss, throughput (with its ideal) and each rank's share."""

    steps: list[int]
    loss: list[float | None]
    samples_per_s: list[float | None]
    ideal: list[float | None]
    shares: dict[int, list[float | None]]
    """Per rank: its part of the global batch at each step."""
    eval: dict[str, list[tuple[int, float]]]
    """Per eval metric: (step, value) points."""

    @classmethod
    def of(cls, figures: RunFigures) -> RunSeries:
        """The series of a reduced run."""
        rows = [row for _, row in sorted(figures.rows.items())]
        ranks = sorted({rank for row in rows for rank in row.cells})
        return cls(steps=[row.step for row in rows], loss=[row.loss for row in rows],
                   samples_per_s=[row.samples_per_s for row in rows],
                   ideal=[row.ideal_samples_per_s for row in rows],
                   shares={rank: [row.share(rank) for row in rows] for rank in ranks},
                   eval=figures.eval_points())
