"""What a share costs when it runs as micro-batches, and the split that minimises the slowest
rank under those costs (plain Python, no torch).

A rank with micro-batch ``m`` runs a share of ``b`` samples as ``ceil(b/m)`` forward/backward
passes, so its time is ``passes·a + c·b``: the fixed cost ``a`` of a pass (kernel launches,
Python) is paid once per pass. A rank with a share of 0 runs no pass at all; it only joins the
step's all-reduce, which costs it (next to) nothing. The balancer measures and fits each rank in
*per-pass* coordinates — the mean batch of one pass and the time of one pass — so the line it
fits is the per-pass ``a + c·b``, and ``PassCost`` turns that back into the time of a share.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from trainer.balance.fit import RankTimes
from trainer.balance.solve import LinearFit, _bounds


def passes(batch: int, micro: int | None) -> int:
    """Forward/backward passes a share of ``batch`` takes with micro-batch ``micro``."""
    if batch <= 0:
        return 0
    return 1 if micro is None else math.ceil(batch / micro)


def per_pass(batch: int, micro: int | None) -> int:
    """The mean batch of one pass (rounded), the coordinate the balancer fits in."""
    n = passes(batch, micro)
    return batch if n <= 1 else round(batch / n)


@dataclass(frozen=True)
class PassCost:
    """A rank's compute seconds for a share: ``passes(b)·a + c·b`` (0 for no share)."""

    line: LinearFit
    """Per-pass time model: ``a`` fixed seconds per pass, ``c`` seconds per sample."""
    micro: int | None
    """The rank's micro-batch (None: the whole share in one pass)."""

    def seconds(self, batch: int) -> float:
        """Predicted compute seconds for a share of ``batch`` samples."""
        n = passes(batch, self.micro)
        if n == 0:
            return 0.0
        # A negative fitted intercept (time per sample rising with the batch) is a correction
        # of the whole share, not a refund per pass: counting it once, and never below zero,
        # keeps the cost rising with the batch.
        a = self.line.intercept
        return max(max(a, 0.0) * n + min(a, 0.0) + self.line.slope * batch, 0.0)


def min_max_costs(
    costs: Sequence[PassCost], global_batch: int, *, min_batch: int = 1,
    max_batch: Sequence[int | None] | None = None,
) -> tuple[int, ...]:
    """The integer split that minimises the slowest rank's predicted time under ``costs``.

    Exact for any costs that rise with the batch: the smallest finish time ``T`` at which the
    ranks can take the whole batch is found by bisection over the times the costs can take,
    each rank takes the most samples it finishes by ``T``, and any excess is handed back by the
    ranks that finish last, never leaving a rank at 0 samples when another can give instead.
    So a rank gets a share of 0 only when even one sample there would end the step later than
    the others can finish everything.
    """
    n = len(costs)
    lo, hi = _bounds(n, global_batch, min_batch, max_batch)
    table = [[c.seconds(b) for b in range(lo[r], hi[r] + 1)] for r, c in enumerate(costs)]
    for r, row in enumerate(table):
        if any(b < a for a, b in itertools.pairwise(row)):
            raise ValueError(f"rank {r}'s cost does not rise with the batch: {costs[r]}")

    def most_by(limit: float) -> list[int] | None:
        taken = []
        for r, row in enumerate(table):
            k = bisect.bisect_right(row, limit)
            if k == 0:
                return None
            taken.append(lo[r] + k - 1)
        return taken

    candidates = sorted({t for row in table for t in row})
    low, high = 0, len(candidates) - 1
    while low < high:
        mid = (low + high) // 2
        taken = most_by(candidates[mid])
        if taken is not None and sum(taken) >= global_batch:
            high = mid
        else:
            low = mid + 1
    out = most_by(candidates[low])
    assert out is not None and sum(out) >= global_batch
    # Hand back the excess one sample at a time from the rank finishing last; a rank that would
    # drop to 0 gives only when no other rank can.
    heap = [(b <= 1, -table[r][b - lo[r]], r) for r, b in enumerate(out) if b > lo[r]]
    heapq.heapify(heap)
    excess = sum(out) - global_batch
    while excess > 0:
        _, _, r = heapq.heappop(heap)
        out[r] -= 1
        excess -= 1
        if out[r] > lo[r]:
            heapq.heappush(heap, (out[r] <= 1, -table[r][out[r] - lo[r]], r))
    return tuple(out)


def pass_costs(ranks: Sequence[RankTimes], now: int, anchors: Sequence[int],
               micro: Sequence[int | None]) -> list[PassCost] | None:
    """Every rank's cost from its per-pass line anchored at ``anchors``; None while no rank
    has a usable line yet (a rank without one borrows the typical slope)."""
    models = [t.line(b, now) for t, b in zip(ranks, anchors, strict=True)]
    known = sorted(m.slope for m in models if m is not None)
    if not known:
        return None
    return [PassCost(m if m is not None else LinearFit(0.0, known[len(known) // 2]), micro[r])
            for r, m in enumerate(models)]


def measured_seconds(times: RankTimes, batch: int, micro: int | None) -> float | None:
    """The smoothed measured seconds of a share of ``batch`` (None when not measured)."""
    point = times.points.get(per_pass(batch, micro))
    return point.seconds * passes(batch, micro) if point and batch else None
