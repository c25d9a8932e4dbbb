"""What a rank costs, not only what it computes: the step as compute + exchange + fixed cost,
and the active set solved together with the split (plain Python, no torch).

A step takes ``max over active ranks of compute_r(b_r) + exchange(A) + fixed``: ``exchange`` is
the gradient all-reduce not hidden behind the backward, measured as the least over the active
ranks of their seconds in it after their own compute (the last rank to arrive waits for nobody);
``fixed`` (the tally, the optimizer step, the loop) is the same whatever the set, so it cancels
out of every comparison. A benched rank (share 0) leaves the exchange (trainer/step/exchange.py),
so a smaller active set pays less. The exchange of every active set met is measured (median of
its recent steps); one never met is predicted from the most measured set of two or more ranks by
the bandwidth term of a ring all-reduce, ``2(n-1)/n`` of the gradient bytes per rank through the
set's slowest link, over the overhead of a rank alone (which exchanges nothing). Where the
pre-flight check measured the hosts' links, a set without the slow link is predicted that much
faster: a host behind 100 Mbit/s that slows the whole set does not make the others look slow.
A wrong prediction is corrected by the measurements under the set it led to.

Under sharded state (``shard_state``: trainer/step/shards.py) benching a rank removes none of
its exchange: every rank holds a slice, so every rank, a benched one too, takes part in the
gradient reduce into the slices and in the gather of the updated parameters, and steps its own
slice (seconds ∝ the slice, i.e. its memory budget, not its share of the batch). The exchange
of every active set is then the world's (``exchange_members``), measured from a rank's compute
end to the end of the gather (the slice update included: trainer/step/exchange.py), and
predicted before a run from the bytes each rank moves (``exchange_factor``).

``best_plan`` tries the active sets made of the ``k`` fastest ranks (by time per sample at an
equal share) and those with any one rank left out, solves each one's min-max split
(``min_max_costs``), and keeps the one with the least predicted step time.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from profiles.user_errors import UsageError
from trainer.balance.passes import PassCost, min_max_costs, per_pass
from trainer.settings.run_settings import ShardState

RECENT = 32
"""Overhead samples kept per active set (the median of them is its measured overhead)."""
MIN_SAMPLES = 3
"""An active set's overhead counts as measured from this many steps on."""


def probe_batch(global_batch: int, world_size: int, micro: int | None) -> int:
    """The batch of a benched rank's probe pass: its equal share, within its micro-batch (the
    same on every rank and across resumes, so rank 0 knows what a probe measured)."""
    return per_pass(max(1, global_batch // world_size), micro)


def ring_factor(ranks: int) -> float:
    """Bytes each rank sends in a ring all-reduce, relative to the gradient: ``2(n-1)/n``."""
    return 2 * (ranks - 1) / ranks


def exchange_factor(ranks: int, stage: ShardState) -> float:
    """Bytes each rank moves in a step's exchange, relative to the gradient (the trained
    parameters' bytes, the same in fp32): ``replicate`` the ring all-reduce, ``2(n-1)/n``;
    ``optimizer`` (stage 1) that all-reduce plus the gather of the updated slices,
    ``3(n-1)/n``; ``gradients`` (stage 2) a reduce into the slices plus the gather,
    ``2(n-1)/n``."""
    share = (ranks - 1) / ranks
    return {"replicate": 2 * share, "optimizer": 3 * share, "gradients": 2 * share}[stage]


def exchange_members(active: tuple[int, ...], world: int | None) -> tuple[int, ...]:
    """The ranks that take part in the exchange of a step whose active ranks are ``active``:
    those alone (replicated state, ``world`` None), or every rank of the ``world`` (sharded
    state: a benched rank holds a slice, which it reduces, updates and sends)."""
    return active if world is None else tuple(range(world))


def ring_exchange_s(gradient_bytes: float, ranks: int, link_bytes_per_s: float,
                    stage: ShardState = "replicate") -> float:
    """Seconds of a step's exchange of ``gradient_bytes`` over ``ranks`` ranks whose slowest
    link carries ``link_bytes_per_s``: the ring all-reduce, or under sharded state ``stage``'s
    reduce and gather (``exchange_factor``; the bandwidth term alone: before a run, nothing is
    measured; once it runs, ``ExchangeTimes`` replaces this with what the steps took)."""
    return exchange_factor(ranks, stage) * gradient_bytes / link_bytes_per_s


class ExchangeModel(Protocol):
    """Predicted exchange seconds of an active set: measured in a run (``ExchangeTimes``), or
    from the links before it (trainer/balance/estimate.py)."""

    def predict(self, active: tuple[int, ...]) -> float: ...

    def grounded(self, active: tuple[int, ...]) -> bool:
        """Whether ``predict(active)`` rests on this set's own facts (measured, or its links
        known), not on another set's measurement scaled."""
        ...


@dataclass
class ExchangeTimes:
    """Measured per-step overhead (seconds) of each active set met."""

    samples: dict[tuple[int, ...], list[float]] = field(default_factory=dict)
    links: tuple[float, ...] | None = None
    """Each rank's link (any unit; 0: not known); None: none known, every link counts equal."""
    world: int | None = None
    """Sharded state: the world's size, every rank of which takes part in every step's
    exchange whatever the active set (``exchange_members``); None: replicated."""

    def add(self, active: tuple[int, ...], seconds: float) -> None:
        """One step's overhead under ``active``."""
        recent = self.samples.setdefault(exchange_members(active, self.world), [])
        recent.append(max(seconds, 0.0))
        del recent[:-RECENT]

    def measured(self, active: tuple[int, ...]) -> float | None:
        """The median overhead under ``active`` (None until ``MIN_SAMPLES`` steps ran)."""
        recent = self.samples.get(exchange_members(active, self.world), [])
        return statistics.median(recent) if len(recent) >= MIN_SAMPLES else None

    def predict(self, active: tuple[int, ...]) -> float:
        """Measured, else ``fixed + per_ring · 2(n-1)/n``: ``fixed`` is the least overhead
        measured under one rank alone (which exchanges nothing; 0 when none ran alone), and
        ``per_ring`` comes from the most measured set of two or more ranks (none: the
        exchange is not known, and compute decides alone). Sharded, every set's is the
        world's."""
        active = exchange_members(active, self.world)
        seen = self.measured(active)
        if seen is not None:
            return seen
        fixed = min((m for k in self.samples if len(k) == 1
                     if (m := self.measured(k)) is not None), default=0.0)
        known = [(len(v), k) for k, v in self.samples.items()
                 if len(k) > 1 and len(v) >= MIN_SAMPLES]
        if len(active) <= 1 or not known:
            return fixed
        reference = max(known)[1]
        per_ring = max((self.measured(reference) or 0.0) - fixed, 0.0) / ring_factor(
            len(reference))
        return fixed + per_ring * ring_factor(len(active)) * self._slowness(active, reference)

    def grounded(self, active: tuple[int, ...]) -> bool:
        """Measured, or every link known (see ``ExchangeModel``)."""
        links, active = self.links, exchange_members(active, self.world)
        return (self.measured(active) is not None or len(active) <= 1
                or (links is not None and all(links[r] > 0 for r in active)))

    def _slowness(self, active: tuple[int, ...], reference: tuple[int, ...]) -> float:
        """How much slower ``active``'s slowest link is than ``reference``'s (1 when a link
        of either set is not known)."""
        links = self.links
        if links is None or any(links[r] <= 0 for r in (*active, *reference)):
            return 1.0
        return min(links[r] for r in reference) / min(links[r] for r in active)

    def to_state(self) -> dict[str, Any]:
        return {",".join(map(str, k)): list(v) for k, v in self.samples.items()}

    @classmethod
    def from_state(cls, raw: dict[str, Any] | None, links: tuple[float, ...] | None = None,
                   world: int | None = None) -> ExchangeTimes:
        return cls({tuple(int(r) for r in k.split(",") if r): [float(s) for s in v]
                    for k, v in (raw or {}).items()}, links, world)


@dataclass(frozen=True)
class Plan:
    """A split with its predicted step time."""

    split: tuple[int, ...]
    compute_s: float
    """The slowest active rank's predicted compute seconds."""
    exchange_s: float
    """The active set's predicted overhead seconds."""

    @property
    def active(self) -> tuple[int, ...]:
        return tuple(r for r, b in enumerate(self.split) if b > 0)

    @property
    def total_s(self) -> float:
        return self.compute_s + self.exchange_s


def plan_of(split: Sequence[int], costs: Sequence[PassCost], exchange: ExchangeModel) -> Plan:
    """``split``'s predicted step time."""
    compute = max((costs[r].seconds(b) for r, b in enumerate(split) if b > 0), default=0.0)
    active = tuple(r for r, b in enumerate(split) if b > 0)
    return Plan(tuple(split), compute, exchange.predict(active))


def plan_for(members: Sequence[int], costs: Sequence[PassCost], global_batch: int,
             max_batch: Sequence[int | None] | None, exchange: ExchangeModel) -> Plan | None:
    """The min-max split over ``members`` alone (every other rank at 0), with its predicted
    step time; None when their caps cannot hold the batch."""
    chosen = set(members)
    caps = [(max_batch[r] if max_batch is not None else None) if r in chosen else 0
            for r in range(len(costs))]
    try:
        split = min_max_costs(costs, global_batch, min_batch=0, max_batch=caps)
    except UsageError:  # these ranks' caps cannot hold the batch
        return None
    return plan_of(split, costs, exchange)


def best_plan(costs: Sequence[PassCost], global_batch: int,
              max_batch: Sequence[int | None] | None, exchange: ExchangeModel,
              current: Sequence[int] = ()) -> Plan | None:
    """The least predicted step time over the ``current`` set less its slowest ranks, less any
    one rank, or plus the fastest others (never a swap: trading a rank for an equal one gains
    only noise).

    Several ranks leave at once only when the set one rank larger was itself grounded
    (measured, or its links known): an exchange predicted from a set that held a slow link
    would make every smaller set look slow, and the balancer would bench fast ranks with the
    slow one. One rank at a time, each step is measured before the next."""
    n = len(costs)
    equal = max(1, global_batch // n)
    by_speed = sorted(range(n), key=lambda r: (costs[r].seconds(equal), r))
    inside = [r for r in by_speed if r in current] or by_speed
    outside = [r for r in by_speed if r not in inside]
    smaller = [inside[:k] for k in range(1, len(inside))
               if k == len(inside) - 1 or exchange.grounded(tuple(sorted(inside[:k + 1])))]
    if len(inside) > 2:  # each rank left out alone, not only the slowest: a host that computes
        # fastest may still be the one whose slow link holds every step back
        smaller += [[r for r in inside if r != out] for out in inside[:-1]]
    candidates = ([*smaller, inside]
                  + [inside + outside[:k] for k in range(1, len(outside) + 1)])
    best: Plan | None = None
    for members in candidates:
        plan = plan_for(members, costs, global_batch, max_batch, exchange)
        if plan is not None and (best is None or plan.total_s < best.total_s):
            best = plan
    return best


def _ranks(ranks: Sequence[int]) -> str:
    return f"rank{'s' if len(ranks) > 1 else ''} {','.join(map(str, ranks))}"


def active_reason(old: Plan, new: Plan, sharded: bool = False) -> str:
    """The change of active set in numbers: what the ranks add to the exchange against the
    compute they save (``sharded``: a benched rank's exchange stays, and the reason says so)."""
    leaving = [r for r in old.active if r not in new.active]
    joining = [r for r in new.active if r not in old.active]
    exchange_ms = (old.exchange_s - new.exchange_s) * 1000
    compute_ms = (new.compute_s - old.compute_s) * 1000
    parts = []
    if leaving:
        many = len(leaving) > 1
        who = f"{_ranks(leaving)} sit{'' if many else 's'} out: "
        if compute_ms >= 0:
            parts.append(who + f"{'they add' if many else 'it adds'} {exchange_ms:.1f} ms of "
                         f"exchange to save {compute_ms:.1f} ms of compute")
        else:  # the ranks were the stragglers: leaving saves compute and exchange
            parts.append(who + f"compute {old.compute_s * 1000:.1f} -> "
                         f"{new.compute_s * 1000:.1f} ms without {'them' if many else 'it'}, "
                         f"and {exchange_ms:.1f} ms less exchange")
    if joining:
        many = len(joining) > 1
        parts.append(f"{_ranks(joining)} rejoin{'' if many else 's'}: "
                     f"{-compute_ms:.1f} ms less compute for {max(0.0, -exchange_ms):.1f} ms "
                     "more exchange")
    if sharded and leaving:
        parts.append("they hold slices: their exchange stays" if len(leaving) > 1
                     else "it holds a slice: its exchange stays")
    step = f"step {old.total_s * 1000:.1f} -> {new.total_s * 1000:.1f} ms predicted"
    return "; ".join([*parts, step])
