"""Where a run stands, derived from the run model's state: its pace, progress, ETA and time.

``RunPace`` is the part of ``console.model.run.RunModel`` that only reads: while a run goes,
its newest step every rank reported; once it has ended, the whole run's figures (the one
reducer's, ``figures.RunFigures``, the same ``corral report`` reads).
"""

from __future__ import annotations

from collections import deque

from console.model.records import ThroughputPoint
from figures import RunFigures, SoloBaseline, efficiency_of, ideal_of, run_baseline
from remote.api import FINAL_RUN_STATES


class RunPace:
    """The run model's derived values (``RunModel`` holds the state they read)."""

    run_id: str | None
    state: str
    figures: RunFigures
    capacity: tuple[float | None, ...]
    history: deque[ThroughputPoint]
    total_steps: int | None
    step: int
    started_t: float | None
    finished_t: float | None
    recorded_wall_s: float | None
    _step_times: deque[tuple[int, float]]

    @property
    def live(self) -> bool:
        """A run is in progress (not idle and not in a final state)."""
        return self.run_id is not None and self.state not in FINAL_RUN_STATES

    @property
    def finished(self) -> bool:
        """The run has ended and has steps: figures are whole-run averages and totals."""
        return self.state in FINAL_RUN_STATES and self.figures.has_steps

    @property
    def ideal_samples_per_s(self) -> float | None:
        """Σ of every rank's solo rate: the throughput with no waiting at all (over the whole
        run once it has ended, else at the newest step every rank reported)."""
        return self.figures.ideal_samples_per_s if self.finished else self._live_ideal()

    def _live_ideal(self) -> float | None:
        row = self.figures.latest_complete_row()
        if row is not None:
            return row.ideal_samples_per_s
        return ideal_of(list(self.capacity))  # before any step: the run's estimate

    @property
    def samples_per_s(self) -> float | None:
        """The cluster's latest measured throughput (its mean once the run has ended)."""
        if self.finished:
            return self.figures.mean_samples_per_s
        return self.history[-1].samples_per_s if self.history else None

    @property
    def efficiency(self) -> float | None:
        """The compute share: measured throughput / ideal (1.0 = every rank busy all the
        time, the share of a step in forward and backward when the split is even): over the whole
        run once it has ended, else of one step, the newest every rank reported (its measured
        throughput against its own ideal, never one step's against another's)."""
        if self.finished:
            return self.figures.efficiency
        row = self.figures.latest_complete_row()
        return efficiency_of(row.samples_per_s, row.ideal_samples_per_s) if row else None

    @property
    def baseline(self) -> SoloBaseline:
        """The run against its hosts alone (% of Σ solo, × fastest host, ``figures/solo.py``):
        the whole run's once it has ended, else the newest step every rank reported."""
        return run_baseline(self.figures, live=not self.finished)

    @property
    def progress(self) -> float | None:
        """Fraction of the run's steps done."""
        if not self.total_steps:
            return None
        return max(0.0, min(1.0, self.step / self.total_steps))

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace of the recent steps (from event times, not the clock)."""
        if not self.total_steps or len(self._step_times) < 2 or not self.live:
            return None
        (s0, t0), (s1, t1) = self._step_times[0], self._step_times[-1]
        if s1 <= s0 or t1 <= t0:
            return None
        return max(0, self.total_steps - s1) * (t1 - t0) / (s1 - s0)

    def elapsed_s(self, now: float) -> float | None:
        """Seconds since the run started (its first status or trainer event, whichever is
        older: a seat opened on a running run counts from the record's first line); once it
        ended, the run's wall time (the report's: the record's, else first event to last)."""
        if self.finished:
            return self.recorded_wall_s or self.figures.wall_s
        starts = [t for t in (self.started_t, self.figures.first_t) if t is not None]
        if not starts:
            return None
        end = self.finished_t if self.finished_t is not None else now
        return max(0.0, end - min(starts))

