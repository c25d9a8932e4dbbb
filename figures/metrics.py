"""A run's figures: the one definition of each, and the records they are computed from.

The reducer (``figures.reducer.RunFigures``) takes a run's typed trainer events one at a
time and keeps each step as it last ran: a step redone after a relaunch replaces the earlier
run of it, in every figure. The console's run model (live and replayed), the headless
follower, ``corral report``, TensorBoard and the plots all read their numbers from it, so they
agree by construction.

The definitions:

- a step's **samples**: the run's global batch (the start event's), else its ranks' local
  batches (a plain script's: every rank's that took the step, in whatever order their events
  arrive; a live reader charts the step once all are in); its **time**: rank 0's ``step_s``;
  its **throughput**: samples / time;
- a rank's **solo rate**: samples / compute time (what it would do if it never waited); the
  **ideal**: Σ of the ranks' solo rates (over one step, or over the whole run from each rank's
  sums); **efficiency**: measured throughput / ideal (the console, ``corral report``, the
  plots and TensorBoard all show this one);
- the **outside-compute fraction**: 1 - Σ steps' slowest compute time / Σ step time, the part
  of a step no rank's forward/backward accounts for (gradient all-reduce, optimizer, fixed
  per-step work); above ``FIXED_COST_DOMINATES`` the step is dominated by that fixed per-step
  cost, which the ideal leaves out and more ranks do not share (fewer ranks are faster);
- the run's **mean throughput**: Σ step samples / Σ step times; a rank's **utilisation**:
  Σ compute time / Σ step time;
- a GPU rank's **GPU utilisation**: the mean of its ``resources`` events' ``gpu_util`` (NVML's
  SM utilisation); its **peak GPU memory**: the largest ``gpu_peak_allocated`` and
  ``gpu_peak_reserved`` its ``resources`` events reported (torch's allocator peaks);
- a balancer move's **measured gain**: 1 - (mean slowest compute time over the
  ``MEASURE_AFTER_STEPS`` steps from the move) / (slowest compute time before it);
- **wall time**: from the run's first trainer event to its last (event times, never the
  clock); **restarts**: rank 0's starts after its first; **time lost**: the gap between the
  last step before each relaunch and the relaunch, plus the time of the steps redone after it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from trainer.events import (
    LOWER_IS_BETTER,
)


def ratio(part: float, whole: float) -> float | None:
    """``part / whole``, None when ``whole`` is not positive."""
    return part / whole if whole > 0 else None


def ideal_of(solo_rates: list[float | None]) -> float | None:
    """Σ of the known solo rates: the throughput with no rank ever waiting."""
    known = [rate for rate in solo_rates if rate is not None]
    return sum(known) if known else None


FIXED_COST_DOMINATES = 0.5
"""Outside-compute fraction from which a run's steps count as dominated by fixed cost."""


def outside_compute_of(slowest_compute_s: float, step_s: float) -> float | None:
    """1 - slowest compute time / step time, over the same steps (None for no step time)."""
    share = ratio(slowest_compute_s, step_s)
    return None if share is None else max(0.0, 1.0 - share)


def efficiency_of(measured: float | None, ideal: float | None) -> float | None:
    """Measured throughput / ideal (1.0 = every rank busy all the time)."""
    return measured / ideal if measured is not None and ideal else None


@dataclass(frozen=True)
class RankCell:
    """One rank's part of one step."""

    local_batch: int
    compute_s: float
    step_s: float
    tokens: int | None = None
    """Its input tokens, when the run shares tokens (variable-length items)."""

    @property
    def samples_per_s(self) -> float | None:
        """This rank's throughput in the step."""
        return ratio(self.local_batch, self.step_s)

    @property
    def solo_rate(self) -> float | None:
        """What this rank would have done alone: local batch / compute time."""
        return ratio(self.local_batch, self.compute_s)

    @property
    def utilisation(self) -> float | None:
        """Compute time / step time (1 = never waited for the others)."""
        return ratio(self.compute_s, self.step_s)


@dataclass
class StepRow:
    """One step over all ranks, as it last ran."""

    step: int
    declared_batch: int | None = None
    """The run's global batch when the step ran (its start event's)."""
    t: float = 0.0
    loss: float | None = None
    """Rank 0's global loss (its local loss when the global one is missing)."""
    step_s: float | None = None
    """Rank 0's step wall time (None until rank 0 reported the step)."""
    lr: float | None = None
    cells: dict[int, RankCell] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        """Samples in this step: the run's global batch, else the ranks' local batches."""
        return self.declared_batch or sum(cell.local_batch for cell in self.cells.values())

    @property
    def samples_per_s(self) -> float | None:
        """The cluster's throughput in this step."""
        return ratio(self.samples, self.step_s) if self.step_s is not None else None

    @property
    def ideal_samples_per_s(self) -> float | None:
        """Σ ranks' solo rates in this step."""
        return ideal_of([cell.solo_rate for cell in self.cells.values()])

    @property
    def max_compute_s(self) -> float:
        """The slowest rank's compute time: what the step waits for."""
        return max((cell.compute_s for cell in self.cells.values()), default=0.0)

    def share(self, rank: int) -> float | None:
        """``rank``'s part of the step's samples."""
        cell = self.cells.get(rank)
        return ratio(cell.local_batch, self.samples) if cell is not None else None


@dataclass
class RankFigures:
    """One rank's sums over the run's steps (each step once, as it last ran)."""

    rank: int
    host: str = "?"
    device: str = "?"
    """``cpu`` or the GPU's name."""
    samples: int = 0
    compute_s: float = 0.0
    step_s: float = 0.0
    steps: int = 0
    tokens: int = 0
    token_steps: int = 0
    """Steps that reported tokens (runs that share tokens)."""
    gpu_util_sum: float = 0.0
    gpu_util_samples: int = 0
    gpu_peak_allocated: int | None = None
    """The most bytes its tensors held on its GPU (None: not a GPU rank, or never sampled)."""
    gpu_peak_reserved: int | None = None
    """The most bytes torch's allocator reserved on its GPU for it."""
    state_bytes: int | None = None
    """Bytes of training state it holds (its start's; None: not reported)."""
    state_budget: int | None = None
    """Bytes of memory it may give to training state (its start's)."""

    def add(self, cell: RankCell, sign: int) -> None:
        """Count ``cell`` in (sign 1) or out (sign -1, a step replaced by its redo)."""
        if cell.tokens is not None:
            self.tokens += sign * cell.tokens
            self.token_steps += sign
        self.samples += sign * cell.local_batch
        self.compute_s += sign * cell.compute_s
        self.step_s += sign * cell.step_s
        self.steps += sign

    @property
    def mean_samples_per_s(self) -> float | None:
        """Σ samples / Σ step time."""
        return ratio(self.samples, self.step_s)

    @property
    def solo_rate(self) -> float | None:
        """Σ samples / Σ compute time: its rate had it never waited."""
        return ratio(self.samples, self.compute_s)

    @property
    def utilisation(self) -> float | None:
        """Σ compute time / Σ step time."""
        return ratio(self.compute_s, self.step_s)

    @property
    def mean_tokens_per_step(self) -> float | None:
        """Σ tokens / steps that reported them (None when the run shares item counts)."""
        return ratio(self.tokens, self.token_steps) if self.token_steps else None

    @property
    def mean_compute_s(self) -> float | None:
        return ratio(self.compute_s, self.steps)

    @property
    def mean_step_s(self) -> float | None:
        return ratio(self.step_s, self.steps)

    def add_resources(self, gpu_util: float | None, peak_allocated: int | None,
                      peak_reserved: int | None) -> None:
        """Count one ``resources`` sample of this rank."""
        if gpu_util is not None:
            self.gpu_util_sum += gpu_util
            self.gpu_util_samples += 1
        if peak_allocated is not None:
            self.gpu_peak_allocated = max(self.gpu_peak_allocated or 0, peak_allocated)
        if peak_reserved is not None:
            self.gpu_peak_reserved = max(self.gpu_peak_reserved or 0, peak_reserved)

    @property
    def gpu_util(self) -> float | None:
        """Mean GPU (SM) utilisation over its samples, percent (None without any)."""
        return ratio(self.gpu_util_sum, self.gpu_util_samples)


@dataclass(frozen=True, kw_only=True)
class Move:
    """One balancer decision and what it gained."""

    step: int
    previous: list[int]
    split: list[int]
    reason: str
    policy: str
    predicted_gain: float
    """Predicted relative reduction of the slowest rank's compute time per step."""
    measured_gain: float | None
    """Measured over the ``MEASURE_AFTER_STEPS`` steps from the move (None: not all run)."""


@dataclass(frozen=True, kw_only=True)
class Metric:
    """A metric's last and best value, and the step of each."""

    final: float
    final_step: int
    best: float
    best_step: int


def metric_of(points: list[tuple[int, float]], lower_is_better: bool = True) -> Metric | None:
    """The last and best of ``(step, value)`` points (None for none)."""
    if not points:
        return None
    pick = min if lower_is_better else max
    best_step, best = pick(points, key=lambda p: p[1])
    return Metric(final=points[-1][1], final_step=points[-1][0], best=best, best_step=best_step)


def lower_is_better(metric: str) -> bool:
    """An eval metric whose name says it is best when lowest (loss, perplexity...)."""
    return any(word in metric for word in LOWER_IS_BETTER)


def percentile(values: list[float], q: int) -> float | None:
    """The ``q``-th percentile (inclusive method), None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]

