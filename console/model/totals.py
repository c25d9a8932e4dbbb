"""Whole-run figures the console keeps beside the latest ones: averages, totals, the loss curve.

While a run goes, the panels show each step as it happens; once it has ended they show these
instead (a run's slow last step says nothing about the run). The definitions are the report's
(``remote.records.summary``): mean throughput = Σ samples / Σ step time; a rank's solo rate = Σ its
samples / Σ its compute time, the ideal their sum; utilisation = Σ compute / Σ step time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer.events import (
    EVAL_METRICS,
    LOWER_IS_BETTER,
    EvalEvent,
    StartEvent,
    StepEvent,
    TrainerEvent,
)

CURVE_POINTS = 4000
"""Loss points kept for the chart; past that every other point is dropped (the chart shows at
most a few hundred columns anyway)."""


@dataclass
class RankTotals:
    """One rank's sums over the run."""

    samples: int = 0
    compute_s: float = 0.0
    step_s: float = 0.0
    steps: int = 0


@dataclass
class Curve:
    """(step, value) points of one metric, thinned out as they grow."""

    points: list[tuple[int, float]] = field(default_factory=list)
    best: tuple[int, float] | None = None
    lower_is_better: bool = True

    def add(self, step: int, value: float) -> None:
        """Append a point (replacing a redone step's), keeping the best value."""
        while self.points and self.points[-1][0] >= step:
            self.points.pop()
        self.points.append((step, value))
        if len(self.points) > CURVE_POINTS:
            self.points = self.points[::2]
        if self.best is None or (value < self.best[1] if self.lower_is_better
                                 else value > self.best[1]):
            self.best = (step, value)

    @property
    def last(self) -> tuple[int, float] | None:
        """The newest point."""
        return self.points[-1] if self.points else None


class RunTotals:
    """Sums over the run's steps, the loss curve and any eval curves."""

    def __init__(self) -> None:
        self.steps = 0
        """Rank 0's steps seen."""
        self.samples = 0
        self.step_time_s = 0.0
        self.global_batch: int | None = None
        self.ranks: dict[int, RankTotals] = {}
        self.loss = Curve()
        self.evals: dict[str, Curve] = {}

    def observe(self, event: TrainerEvent) -> None:
        """Absorb one rank event (kinds other than start, step and eval are ignored)."""
        if isinstance(event, StepEvent):
            self._step(event)
        elif isinstance(event, StartEvent):
            self.global_batch = event.global_batch
        elif isinstance(event, EvalEvent):
            self._eval(event)

    def _step(self, event: StepEvent) -> None:
        rank = self.ranks.setdefault(event.rank, RankTotals())
        rank.samples += event.local_batch
        rank.compute_s += event.compute_s
        rank.step_s += event.step_s
        rank.steps += 1
        if event.rank != 0:
            return
        self.steps += 1
        self.samples += self.global_batch or event.local_batch
        self.step_time_s += event.step_s
        self.loss.add(event.step, event.global_loss if event.global_loss is not None
                      else event.loss)

    def _eval(self, event: EvalEvent) -> None:
        if event.rank != 0:
            return
        for name in EVAL_METRICS:
            value = getattr(event, name)
            if value is None:
                continue
            lower = any(word in name for word in LOWER_IS_BETTER)
            self.evals.setdefault(name, Curve(lower_is_better=lower)).add(event.step,
                                                                           float(value))

    # ---------------------------------------------------------------- figures
    @property
    def mean_samples_per_s(self) -> float | None:
        """Σ samples / Σ step time of rank 0's steps."""
        return self.samples / self.step_time_s if self.step_time_s > 0 else None

    def solo_rate(self, rank: int) -> float | None:
        """A rank's average samples/s had it never waited: Σ samples / Σ compute time."""
        sums = self.ranks.get(rank)
        return sums.samples / sums.compute_s if sums and sums.compute_s > 0 else None

    @property
    def ideal_samples_per_s(self) -> float | None:
        """Σ of every rank's average solo rate."""
        rates = [r for r in map(self.solo_rate, self.ranks) if r is not None]
        return sum(rates) if rates else None

    def rank_mean(self, rank: int) -> tuple[float | None, float | None, float | None]:
        """A rank's mean samples/s, mean compute time and mean step time over its steps."""
        sums = self.ranks.get(rank)
        if sums is None or not sums.steps or sums.step_s <= 0:
            return None, None, None
        return sums.samples / sums.step_s, sums.compute_s / sums.steps, sums.step_s / sums.steps
