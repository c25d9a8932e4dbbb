"""Before a run: which hosts will pay for their gradient exchange and which will sit out
(``corral check``, ``corral run --dry-run``, the console's check view).

The decision is the balancer's own (trainer/balance/cost.py: ``best_plan`` over the ranks'
compute lines and the active set's exchange); only its inputs differ. The compute of each rank
comes from its host's stored profile (``t(b) = a + c·b``, ``corral profile``), and the exchange
of an active set, which nothing has measured yet, is the ring all-reduce of the trainable
gradient over the slowest link among the hosts it spans (``ring_exchange_s``); under sharded
state, every rank's reduce into the slices and gather of the parameters, whatever the active set
(a benched host holds a slice). Once the run starts, measured steps replace both.

Per host, the estimate compares the best plan of the whole cluster with the best plan without
that host: a host that pays adds throughput; a host that sits out would save less compute than
the exchange it adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trainer.balance.cost import Plan, best_plan, exchange_members, plan_for, ring_exchange_s
from trainer.balance.passes import PassCost
from trainer.balance.solve import LinearFit
from trainer.settings.run_settings import ShardState


@dataclass(frozen=True, kw_only=True)
class HostSpeed:
    """What the estimate knows of one host (None: not known)."""

    name: str
    ranks: int
    """Ranks the host starts."""
    fixed_s: float | None
    """Profile: fixed seconds of one forward+backward pass (``a``)."""
    per_sample_s: float | None
    """Profile: seconds per sample (``c``)."""
    link_bytes_per_s: float | None
    """Bytes per second the host's link to the others carries."""


@dataclass(frozen=True, kw_only=True)
class HostVerdict:
    """One host's part in the estimated run, in numbers (the front end words it)."""

    host: str
    missing: str = ""
    """The fact the estimate lacks: ``profile``, ``link speed``, ``others`` (another host's
    facts), ``split`` (no split holds the batch); "" when it has them all."""
    pays: bool = False
    """True when its ranks get a share; False: it would sit out of the exchange."""
    gain: float = 0.0
    """Throughput with the host over the best without it, less 1 (0 when it sits out)."""
    compute_saved_s: float = 0.0
    """Seconds of step compute its ranks save (when it sits out: would save)."""
    exchange_added_s: float = 0.0
    """Seconds its ranks add to the step's exchange (when it sits out: would add; sharded:
    add benched too, see ``holds_slice``)."""
    holds_slice: bool = False
    """Sharded state: benched, the host still holds a slice and pays ``exchange_added_s``;
    only leaving it out of the run saves that."""
    step_s: float = 0.0
    """The estimated step time of the whole cluster's best plan (0 when not known)."""


class LinkExchange:
    """Exchange seconds of an active set from the links: a ring all-reduce of the gradient
    over the slowest link of the ranks in it (one rank alone exchanges nothing); under sharded
    state (``stage``), every rank's reduce and gather, whatever the active set."""

    def __init__(self, gradient_bytes: float, rank_links: Sequence[float],
                 stage: ShardState = "replicate") -> None:
        self.gradient_bytes, self.stage = gradient_bytes, stage
        self.rank_links = tuple(rank_links)

    def predict(self, active: tuple[int, ...]) -> float:
        members = exchange_members(active, None if self.stage == "replicate"
                                   else len(self.rank_links))
        if len(members) <= 1:
            return 0.0
        slowest = min(self.rank_links[r] for r in members)
        return ring_exchange_s(self.gradient_bytes, len(members), slowest, self.stage)

    def grounded(self, active: tuple[int, ...]) -> bool:
        """Always: every prediction comes from the set's own links."""
        return True


def _missing(host: HostSpeed) -> str:
    if host.fixed_s is None or host.per_sample_s is None:
        return "profile"
    if host.link_bytes_per_s is None:
        return "link speed"
    return ""


def rank_costs(hosts: Sequence[HostSpeed]) -> tuple[list[PassCost], list[float], list[str]]:
    """Per rank, in host order: its compute line, its host's link and its host's name."""
    costs: list[PassCost] = []
    links: list[float] = []
    owners: list[str] = []
    for host in hosts:
        line = LinearFit(intercept=host.fixed_s or 0.0, slope=host.per_sample_s or 0.0)
        for _ in range(host.ranks):
            costs.append(PassCost(line, None))
            links.append(host.link_bytes_per_s or 0.0)
            owners.append(host.name)
    return costs, links, owners


def cluster_plan(hosts: Sequence[HostSpeed], global_batch: int, gradient_bytes: float,
                 stage: ShardState = "replicate") -> Plan | None:
    """The balancer's best plan for ``hosts`` (every fact known), as ``best_plan`` makes it."""
    costs, links, _ = rank_costs(hosts)
    return best_plan(costs, global_batch, None, LinkExchange(gradient_bytes, links, stage))


def _verdict(hosts: Sequence[HostSpeed], index: int, full: Plan, global_batch: int,
             gradient_bytes: float, stage: ShardState) -> HostVerdict:
    costs, links, owners = rank_costs(hosts)
    name = hosts[index].name
    own = [r for r, owner in enumerate(owners) if owner == name]
    others = [h for i, h in enumerate(hosts) if i != index]
    if any(full.split[r] > 0 for r in own):
        without = cluster_plan(others, global_batch, gradient_bytes, stage) if others else None
        if without is None:
            return HostVerdict(host=name, pays=True, gain=float("inf"), step_s=full.total_s)
        return HostVerdict(host=name, pays=True, gain=without.total_s / full.total_s - 1,
                           step_s=full.total_s,
                           compute_saved_s=without.compute_s - full.compute_s,
                           exchange_added_s=full.exchange_s - without.exchange_s)
    exchange = LinkExchange(gradient_bytes, links, stage)
    joined = tuple(sorted({*full.active, *own}))
    with_it = plan_for(joined, costs, global_batch, None, exchange)
    # A host so slow that even a share of one sample would lengthen the step saves nothing;
    # what it would add to the exchange is the ring with its ranks in it, either way.
    saved = full.compute_s - with_it.compute_s if with_it is not None else 0.0
    added = exchange.predict(joined) - full.exchange_s
    if stage != "replicate":  # benched, it holds a slice: its part of the exchange stays
        without = cluster_plan(others, global_batch, gradient_bytes, stage) if others else None
        added = full.exchange_s - (without.exchange_s if without is not None else 0.0)
    return HostVerdict(host=name, compute_saved_s=max(saved, 0.0), step_s=full.total_s,
                       exchange_added_s=added, holds_slice=stage != "replicate")


def estimate(hosts: Sequence[HostSpeed], global_batch: int, gradient_bytes: float,
             stage: ShardState = "replicate") -> tuple[HostVerdict, ...]:
    """Each host's verdict, in host order, for the run's ``shard_state`` (``stage``); every
    host says what it lacks when any fact is missing (the decision needs them all)."""
    missing = {h.name: _missing(h) for h in hosts}
    if any(missing.values()):
        return tuple(HostVerdict(host=h.name, missing=missing[h.name] or "others")
                     for h in hosts)
    full = cluster_plan(hosts, global_batch, gradient_bytes, stage)
    if full is None:
        return tuple(HostVerdict(host=h.name, missing="split") for h in hosts)
    return tuple(_verdict(hosts, i, full, global_batch, gradient_bytes, stage)
                 for i in range(len(hosts)))
