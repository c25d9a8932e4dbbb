"""Pure split arithmetic for the balancer: checking, rounding and solving per-rank shares.

A *split* is a tuple of per-rank local batches that sums to the global batch ``B``. Everything
here is plain Python (no torch), so it can be tested and reasoned about on its own.

The min-max solver works on per-rank linear time models ``t_r(b) = a_r + c_r·b``: the split
that makes every rank finish at the same time ``T*`` minimises the slowest rank's time. Without
bounds ``T* = (B + Σ a_r/c_r) / Σ 1/c_r`` and ``b_r = (T* − a_r)/c_r``; with per-rank bounds
``[lo_r, hi_r]`` a rank that hits a bound is clamped and ``T*`` is re-solved over the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from profiles.user_errors import UsageError

__all__ = [
    "LinearFit",
    "equal_split",
    "min_max_split",
    "proportional_split",
    "rms",
    "round_between",
    "round_split",
    "validate_split",
    "water_fill",
]


@dataclass(frozen=True)
class LinearFit:
    """A rank's compute time model: ``seconds(b) = intercept + slope·b``."""

    intercept: float
    """Fixed seconds per step, independent of the batch (kernel launches, Python overhead)."""
    slope: float
    """Seconds per sample (must be > 0)."""

    def seconds(self, batch: float) -> float:
        """Predicted compute seconds for a local batch of ``batch`` samples."""
        return self.intercept + self.slope * batch


def equal_split(global_batch: int, world_size: int) -> tuple[int, ...]:
    """The default split: ``global_batch`` shared as evenly as integers allow.

    The first ``global_batch % world_size`` ranks get one sample more than the others.
    """
    if world_size < 1:
        raise UsageError(f"world size must be at least 1, got {world_size}")
    if global_batch < 0:
        raise UsageError(f"global batch must not be negative, got {global_batch}")
    base, extra = divmod(global_batch, world_size)
    return tuple(base + (1 if r < extra else 0) for r in range(world_size))


def validate_split(
    split: Sequence[int], global_batch: int, world_size: int, *, allow_zero: bool = False
) -> None:
    """Raise ``UsageError`` naming the problem unless ``split`` is usable for this run.

    A usable split has one whole, non-negative entry per rank (no zero unless ``allow_zero``)
    and sums to ``global_batch`` exactly.
    """
    shown = ",".join(str(b) for b in split)
    if len(split) != world_size:
        raise UsageError(
            f"split {shown} has {len(split)} entries but the run has {world_size} ranks: "
            f"give one local batch per rank (--split)"
        )
    for rank, b in enumerate(split):
        if isinstance(b, bool) or not isinstance(b, int):
            raise UsageError(f"split {shown}: rank {rank}'s share {b!r} is not a whole number")
        if b < 0:
            raise UsageError(f"split {shown}: rank {rank}'s share {b} is negative")
        if b == 0 and not allow_zero:
            raise UsageError(
                f"split {shown}: rank {rank}'s share is 0; every rank needs at least one sample "
                f"(zero shares are not allowed)"
            )
    total = sum(split)
    if total != global_batch:
        raise UsageError(
            f"split {shown} sums to {total} but the global batch is {global_batch}: "
            f"the per-rank shares must add up to --global-batch"
        )


def _bounds(
    n: int, total: int, min_batch: int, max_batch: Sequence[int | None] | None
) -> tuple[list[int], list[int]]:
    """Per-rank ``[lo, hi]`` bounds, checked for feasibility against ``total``."""
    if min_batch < 0:
        raise UsageError(f"min batch must not be negative, got {min_batch}")
    if max_batch is not None and len(max_batch) != n:
        raise UsageError(f"max batch has {len(max_batch)} entries for {n} ranks")
    lo = [min_batch] * n
    hi = [total] * n
    for r, cap in enumerate(max_batch or ()):
        if cap is not None:
            hi[r] = int(cap)
    for r in range(n):
        if hi[r] < lo[r]:
            raise UsageError(f"rank {r}'s max batch {hi[r]} is below the min batch {min_batch}")
    if sum(lo) > total:
        raise UsageError(
            f"a global batch of {total} cannot give {n} ranks at least {min_batch} samples each"
        )
    if sum(hi) < total:
        raise UsageError(
            f"the per-rank max batches add up to {sum(hi)}, less than the global batch {total}: "
            f"lower the global batch or raise the caps"
        )
    return lo, hi


def water_fill(
    fits: Sequence[LinearFit], total: float, lo: Sequence[float], hi: Sequence[float]
) -> tuple[float, tuple[float, ...]]:
    """Continuous min-max split: the finish time ``T`` and shares ``b_r`` with ``Σ b_r = total``.

    ``b_r(T) = clamp((T − a_r)/c_r, lo_r, hi_r)`` rises with ``T``; between two consecutive
    clamp points the set of unclamped ranks is fixed and ``Σ b_r(T)`` is linear, so ``T`` is
    found exactly by locating the segment that brackets ``total`` (the closed form above,
    re-solved over the unclamped ranks). Requires ``Σ lo ≤ total ≤ Σ hi`` and slopes > 0.
    """

    def shares(t: float) -> list[float]:
        return [min(max((t - f.intercept) / f.slope, lo[r]), hi[r]) for r, f in enumerate(fits)]

    knots = sorted(
        {f.seconds(lo[r]) for r, f in enumerate(fits)}
        | {f.seconds(hi[r]) for r, f in enumerate(fits)}
    )
    prev_t = knots[0]
    prev_s = sum(shares(prev_t))
    if prev_s >= total:
        return prev_t, tuple(shares(prev_t))
    for t in knots[1:]:
        s = sum(shares(t))
        if s >= total:
            # Linear on [prev_t, t]: interpolation is the closed form over the free ranks.
            t_star = prev_t + (total - prev_s) * (t - prev_t) / (s - prev_s)
            return t_star, tuple(shares(t_star))
        prev_t, prev_s = t, s
    return prev_t, tuple(shares(prev_t))


def _largest_remainder(
    values: Sequence[float], total: int, lo: Sequence[int], hi: Sequence[int]
) -> tuple[int, ...]:
    """Round ``values`` (already within bounds, summing to about ``total``) to integers
    that sum to ``total`` exactly: floors first, then +1 to the largest fractional parts."""
    out = [min(max(math.floor(v + 1e-9), lo[r]), hi[r]) for r, v in enumerate(values)]
    frac = [v - math.floor(v + 1e-9) for v in values]
    order_up = sorted(range(len(values)), key=lambda r: (-frac[r], r))
    order_down = sorted(range(len(values)), key=lambda r: (frac[r], r))
    while sum(out) < total:
        r = next(r for r in order_up if out[r] < hi[r])
        out[r] += 1
        order_up.remove(r)
        order_up.append(r)
    while sum(out) > total:
        r = next(r for r in order_down if out[r] > lo[r])
        out[r] -= 1
        order_down.remove(r)
        order_down.append(r)
    return tuple(out)


def round_split(
    shares: Sequence[float],
    total: int,
    *,
    min_batch: int = 1,
    max_batch: Sequence[int | None] | None = None,
) -> tuple[int, ...]:
    """Integer local batches proportional to ``shares`` that sum to ``total`` exactly.

    ``shares`` are non-negative weights (any scale). Each rank gets at least ``min_batch`` and
    at most its ``max_batch`` entry (None: no cap); what a capped rank cannot take goes to the
    others in proportion. Rounding is largest-remainder. Raises ``UsageError`` when the bounds
    make ``total`` impossible or a share is negative or not finite.
    """
    n = len(shares)
    if n == 0:
        raise UsageError("cannot split a batch among zero ranks")
    for r, s in enumerate(shares):
        if not math.isfinite(s) or s < 0:
            raise UsageError(f"rank {r}'s share {s} must be a finite, non-negative number")
    lo, hi = _bounds(n, total, min_batch, max_batch)
    biggest = max(shares)
    if biggest <= 0:
        raise UsageError("every share is 0: at least one rank must have a positive share")
    # Shares are scaled so the largest is 1; a zero (or vanishing) share becomes a tiny one, so
    # that rank only grows once the others are capped.
    fits = [LinearFit(0.0, 1.0 / max(s / biggest, 1e-9)) for s in shares]
    _, cont = water_fill(fits, total, lo, hi)
    return _largest_remainder(cont, total, lo, hi)


def proportional_split(
    capacities: Sequence[float],
    global_batch: int,
    *,
    min_batch: int = 1,
    max_batch: Sequence[int | None] | None = None,
) -> tuple[int, ...]:
    """Shares proportional to per-rank capacity (samples/s), rounded so ``Σ = global_batch``.

    Raises ``UsageError`` when a capacity is not a positive, finite number.
    """
    for r, c in enumerate(capacities):
        if not math.isfinite(c) or c <= 0:
            raise UsageError(f"rank {r}'s capacity {c} samples/s must be a positive number")
    return round_split(capacities, global_batch, min_batch=min_batch, max_batch=max_batch)


def min_max_split(
    fits: Sequence[LinearFit],
    global_batch: int,
    *,
    min_batch: int = 1,
    max_batch: Sequence[int | None] | None = None,
) -> tuple[int, ...]:
    """The integer split that minimises the slowest rank's predicted time.

    Solves the continuous equal-finish-time split (``water_fill``), takes the floors and hands
    the remaining samples one at a time to the rank that would finish earliest with one more,
    which is optimal for the integer problem given the floors.
    """
    n = len(fits)
    for r, f in enumerate(fits):
        if not (math.isfinite(f.slope) and f.slope > 0 and math.isfinite(f.intercept)):
            raise ValueError(f"rank {r}'s time model {f} needs a finite, positive slope")
    lo, hi = _bounds(n, global_batch, min_batch, max_batch)
    _, cont = water_fill(fits, global_batch, lo, hi)
    out = [min(max(math.floor(v + 1e-9), lo[r]), hi[r]) for r, v in enumerate(cont)]
    while sum(out) > global_batch:  # only through float error: take from the fastest finisher
        r = min((r for r in range(n) if out[r] > lo[r]), key=lambda r: fits[r].seconds(out[r]))
        out[r] -= 1
    while sum(out) < global_batch:
        r = min((r for r in range(n) if out[r] < hi[r]), key=lambda r: fits[r].seconds(out[r] + 1))
        out[r] += 1
    return tuple(out)


def rms(values: Sequence[float]) -> float:
    """Root mean square of ``values`` (not empty)."""
    return math.sqrt(sum(v * v for v in values) / len(values))


def round_between(
    cont: Sequence[float], total: int, old: Sequence[int], target: Sequence[int]
) -> tuple[int, ...]:
    """Largest-remainder rounding of a point on the way between two valid splits.

    Each entry stays between its old and target value, so bounds both respect hold too.
    """
    lo = [min(o, t) for o, t in zip(old, target, strict=True)]
    hi = [max(o, t) for o, t in zip(old, target, strict=True)]
    return _largest_remainder(cont, total, lo, hi)
