"""The balancer's decisions as the console keeps them: each with its measured gain, once known.

A decision predicts a gain; the model measures it as the report does (``remote.records.summary``),
over the ``MEASURE_AFTER_STEPS`` steps after it applied: 1 - (mean slowest-rank compute time
then) / (slowest rank's compute time before).
"""

from __future__ import annotations

import statistics
from collections import deque

from console.model.records import Decision
from trainer.events import MEASURE_AFTER_STEPS, RebalanceEvent, StepEvent

DECISIONS_KEPT = 200
"""Balancer decisions kept in the log."""


class DecisionLog:
    """The run's recent decisions, oldest first, and the step times that measure them."""

    def __init__(self) -> None:
        self.decisions: deque[Decision] = deque(maxlen=DECISIONS_KEPT)
        self._pending: list[Decision] = []
        """Decisions whose window of steps has not fully run yet, oldest first."""
        self._step_max_compute: dict[int, float] = {}
        """Slowest compute time per step seen, for the steps a pending decision measures."""

    def add(self, event: RebalanceEvent) -> None:
        """A new decision (its gain is measured once its window of steps has run)."""
        decision = Decision(
            step=event.step, previous=event.previous, split=event.split, reason=event.reason,
            predicted_gain=event.predicted_gain, policy=event.policy,
            before_s=max(event.times) if event.times else None,
        )
        self.decisions.append(decision)
        self._pending.append(decision)

    def observe_step(self, event: StepEvent) -> None:
        """Any rank's step: keep its compute time if a pending decision measures that step."""
        if self._pending and event.step >= self._pending[0].step:
            previous = self._step_max_compute.get(event.step, 0.0)
            self._step_max_compute[event.step] = max(previous, event.compute_s)

    def settle(self, step: int) -> None:
        """Measure decisions whose window of steps has fully run (rank 0 is at ``step``)."""
        while self._pending and step >= self._pending[0].step + MEASURE_AFTER_STEPS:
            decision = self._pending.pop(0)
            window = range(decision.step, decision.step + MEASURE_AFTER_STEPS)
            times = [self._step_max_compute[s] for s in window if s in self._step_max_compute]
            if times and decision.before_s:
                decision.measured_gain = 1.0 - statistics.fmean(times) / decision.before_s
        keep_from = self._pending[0].step if self._pending else step + 1
        for old in [s for s in self._step_max_compute if s < keep_from]:
            del self._step_max_compute[old]
