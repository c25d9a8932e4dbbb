"""The split in events: ``capacity`` (where the first split came from) and ``rebalance``
(the balancer changed it) (docs/events.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal


@dataclass(frozen=True, kw_only=True)
class CapacityEvent:
    """Rank 0: where the per-rank capacities behind the initial split came from."""

    kind: ClassVar[str] = "capacity"
    t: float
    rank: int
    source: Literal["profile", "warmup", "split"]
    """``profile``: stored profiles; ``warmup``: measured at start; ``split``: the given split."""
    samples_per_s: tuple[float | None, ...]
    """Per-rank solo capacity estimate (samples/s), None where unknown."""
    max_batch: tuple[int | None, ...]
    """Per-rank largest local batch allowed (``--max-batch`` share caps), None for no cap."""
    detail: str = ""
    micro_batch: tuple[int | None, ...] = ()
    """Per-rank largest pass: ``--micro-batch`` lowered to a stored profile's memory cap."""
    solo_samples_per_s: tuple[float | None, ...] = ()
    """Per rank: forward+backward samples/s of its device alone at ``solo_batch`` (None:
    not known), the run's baselines (``figures/solo.py``); empty before they were recorded."""
    solo_source: tuple[str, ...] = ()
    """Per rank: where that came from: ``profile`` (stored), ``probe`` (timed, or its cache),
    ``unknown``."""
    solo_batch: tuple[int, ...] = ()
    """Per rank: the batch of its solo figure: its micro-batch, else the global batch (a CPU's
    probe: at most the equal share)."""


MEASURE_AFTER_STEPS = 5
"""A rebalance's measured gain (the report's and the console's) is taken over this many steps
after it applies."""


@dataclass(frozen=True, kw_only=True)
class RebalanceEvent:
    """Rank 0: the balancer changed the split; it applies from ``step`` on every rank."""

    kind: ClassVar[str] = "rebalance"
    t: float
    rank: int
    step: int
    """First step (1-based) that runs with the new split."""
    previous: tuple[int, ...]
    split: tuple[int, ...]
    reason: str
    predicted_gain: float
    """Predicted relative reduction of the step's compute time (0.12 = 12 % faster)."""
    times: tuple[float, ...]
    """Measured (smoothed) per-rank compute seconds per step under ``previous``."""
    policy: str
    compute_s: tuple[float, float] | None = None
    """A change of active set (a rank sits out or rejoins): the cost model's compute seconds
    of the step before and after it (``Decision.compute_s``); None for a move of samples."""
    exchange_s: tuple[float, float] | None = None
    """With ``compute_s``: the cost model's exchange seconds of the step before and after."""

