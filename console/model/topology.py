"""The network as the console draws it: hosts as nodes with their badge, the measured links
between them, and the link that limits the exchange.

Headless (no Textual, no Rich): every figure is derived from what the run already measured
and decided, never computed a second way — the full-mesh check's ``PairLink`` per direction
(``trainer/balance/links.py``), the check's cost-model estimate per host (``HostVerdict``,
``trainer/balance/estimate.py``) and the run's own split (a host whose ranks all have a share
of 0 sits out of the exchange: the balancer benched it, and its rebalance event carries the
cost model's compute and exchange seconds before and after). ``console/widgets/network.py``
draws it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from console.model.link_probes import Probes, pair_median, probes
from remote.api import HostVerdict, PairLink, pair_throughput

if TYPE_CHECKING:
    from console.model.run import RunModel
    from remote.api import CheckReport
    from trainer.events import RebalanceEvent


@dataclass(frozen=True)
class LinkView:
    """One pair of hosts: both directions as measured."""

    a: str
    b: str
    a_to_b: PairLink | None
    """``a`` sending to ``b`` (None: not measured)."""
    b_to_a: PairLink | None
    """``b`` sending to ``a``."""
    bytes_per_s: float | None
    """The pair's throughput: the slower of its two directions (None: not measured both
    ways), as the balancer's link model takes it (``pair_throughput``)."""
    limiting: bool = False
    """The bottleneck of the exchange: the slowest pair (by its probes' medians) of the hosts
    in it; a ring all-reduce over them goes at its pace. A benched host's links never are."""
    forward: Probes | None = None
    """``a_to_b`` over its probes."""
    back: Probes | None = None
    """``b_to_a`` over its probes."""
    in_exchange: bool = True
    """Both hosts are in the exchange (neither sits out)."""

    @property
    def median(self) -> float | None:
        """The pair's throughput over its probes: the slower direction's median, bytes/s."""
        return pair_median(self.forward, self.back)


@dataclass(frozen=True)
class HostBadge:
    """One host as a node: in the exchange or sitting out, and why, in the cost model's
    numbers."""

    host: str
    sits_out: bool
    text: str
    """``adds 41.2 samples/s`` or ``sits out: its exchange costs 38.0 ms for 4.1 ms of compute
    saved`` (or why there is no figure)."""


@dataclass(frozen=True)
class Topology:
    """The hosts and every pair between them."""

    hosts: tuple[HostBadge, ...]
    links: tuple[LinkView, ...]
    """Every pair, in the hosts' order."""

    @property
    def measured(self) -> bool:
        """Whether any direction was measured (the check ran)."""
        return any(link.a_to_b or link.b_to_a for link in self.links)

    @property
    def limiting(self) -> LinkView | None:
        return next((link for link in self.links if link.limiting), None)


@dataclass(frozen=True)
class SitOut:
    """What the run's balancer found when it benched a host: its cost model's figures."""

    step: int
    """The first step the host sat out."""
    exchange_s: float
    """Exchange seconds the host's ranks added to the step."""
    compute_s: float
    """Compute seconds of the step they saved (negative: they were the slowest)."""
    with_hosts: tuple[str, ...] = ()
    """The other hosts benched in the same change: the figures are theirs together."""


def sit_outs(change: RebalanceEvent | None, rank_hosts: dict[int, str]) -> dict[str, SitOut]:
    """The hosts the balancer's newest change of active set benched, with its figures."""
    if change is None or change.compute_s is None or change.exchange_s is None:
        return {}
    benched = sorted({rank_hosts[r] for r, (was, now) in
                      enumerate(zip(change.previous, change.split, strict=False))
                      if was > 0 and now == 0 and r in rank_hosts})
    return {host: SitOut(step=change.step,
                         exchange_s=change.exchange_s[0] - change.exchange_s[1],
                         compute_s=change.compute_s[1] - change.compute_s[0],
                         with_hosts=tuple(h for h in benched if h != host))
            for host in benched}


def bench_figures(changes: Sequence[RebalanceEvent],
                  rank_hosts: dict[int, str]) -> dict[str, SitOut]:
    """Each host's figures from the newest of ``changes`` (oldest first) that benched it: a
    later change that brings it back, or benches it again without figures (the balancer undoing
    a move), leaves them standing; a badge shows them only while the host sits out."""
    figures: dict[str, SitOut] = {}
    for change in changes:
        figures.update(sit_outs(change, rank_hosts))
    return figures


MISSING = {"profile": "no estimate: no stored profile (corral profile)",
           "link speed": "no estimate: its link speed is not known",
           "others": "no estimate: another host's facts are missing",
           "split": "no estimate: no split of the batch fits the hosts"}


def badge_text(verdict: HostVerdict | None, sits_out: bool, global_batch: int | None,
               benched: SitOut | None = None) -> str:
    """The host's badge from the cost model: the run's balancer's figures when it benched the
    host (``benched``), else the check's estimate (``verdict``); ``sits_out`` as the run
    decided it (or as the estimate did, before the run's balancer spoke)."""
    if sits_out and benched is not None:
        # Hosts benched in one change share its figures: the badge says whose they are.
        who, its, it = ((f" with {', '.join(benched.with_hosts)}", "their", "them")
                        if benched.with_hosts else ("", "its", "it"))
        if benched.compute_s >= 0:
            return (f"sits out{who}: {its} exchange costs {benched.exchange_s * 1000:.1f} ms "
                    f"for {benched.compute_s * 1000:.1f} ms of compute saved (balancer, step "
                    f"{benched.step})")
        return (f"sits out{who}: without {it} the step computes "
                f"{-benched.compute_s * 1000:.1f} ms faster and exchanges "
                f"{benched.exchange_s * 1000:.1f} ms less (balancer, step {benched.step})")
    if verdict is None or verdict.missing:
        known = MISSING.get(verdict.missing, "no estimate") if verdict else "no estimate"
        return f"sits out ({known})" if sits_out else known
    if sits_out:
        return (f"sits out: its exchange costs {verdict.exchange_added_s * 1000:.1f} ms for "
                f"{verdict.compute_saved_s * 1000:.1f} ms of compute saved")
    if not verdict.pays:  # the run's balancer kept it, against the estimate
        return "in the exchange (the estimate had it sit out)"
    if verdict.gain == float("inf"):
        return "alone it holds the batch"
    if not global_batch or verdict.step_s <= 0:
        return f"adds {verdict.gain * 100:.0f} % throughput"
    with_it = global_batch / verdict.step_s  # the estimate's best plan, this host in it
    return f"adds {with_it - with_it / (1 + verdict.gain):.1f} samples/s"


def benched_hosts(split: Sequence[int], rank_hosts: dict[int, str]) -> set[str] | None:
    """Hosts whose ranks all have a share of 0 in the run's ``split`` (None: the run has no
    split yet, or its ranks' hosts are not known)."""
    if not split or any(r not in rank_hosts for r in range(len(split))):
        return None
    working = {rank_hosts[r] for r, share in enumerate(split) if share > 0}
    return {host for host in rank_hosts.values() if host not in working}


def topology(hosts: Sequence[str], links: Sequence[PairLink],
             estimate: Sequence[HostVerdict], benched: Collection[str] | None,
             global_batch: int | None, figures: dict[str, SitOut] | None = None) -> Topology:
    """The network of ``hosts`` (in order); ``benched``: the run's decision (None: none yet,
    the estimate's then); ``figures``: the balancer's, for the hosts it benched."""
    verdicts = {v.host: v for v in estimate}
    badges = []
    for host in hosts:
        verdict = verdicts.get(host)
        if benched is not None:
            out = host in benched
        else:
            out = verdict is not None and not verdict.missing and not verdict.pays
        badges.append(HostBadge(host, out, badge_text(verdict, out, global_batch,
                                                      (figures or {}).get(host))))
    one_way = {(link.source, link.target): link for link in links}
    rates = pair_throughput(links)
    sitting = {badge.host for badge in badges if badge.sits_out}
    views = []
    for i, a in enumerate(hosts):
        for b in hosts[i + 1:]:
            there, back = one_way.get((a, b)), one_way.get((b, a))
            views.append(LinkView(a, b, there, back, rates.get((min(a, b), max(a, b))),
                                  forward=probes(there), back=probes(back),
                                  in_exchange=a not in sitting and b not in sitting))
    return Topology(tuple(badges), tuple(_mark_bottleneck(views)))


def _mark_bottleneck(views: list[LinkView]) -> list[LinkView]:
    """``views`` with the exchange's slowest pair marked ``limiting``."""
    measured = [v for v in views if v.in_exchange and v.median is not None]
    if not measured:
        return views
    slowest = min(measured, key=lambda v: v.median or 0.0)
    return [replace(v, limiting=True) if v is slowest else v for v in views]


def run_topology(model: RunModel, last_check: CheckReport | None = None) -> Topology:
    """The network of ``model``'s hosts: its run's check when it had one, else ``last_check``
    (the console's own ``c``); the run's split decides who sits out once it has one."""
    links, estimate = model.links, model.estimate
    if not links and last_check is not None:
        links, estimate = last_check.links, last_check.estimate
    rank_hosts = {rank: row.host for rank, row in model.ranks.items()}
    return topology(list(model.hosts), links, estimate, benched_hosts(model.split, rank_hosts),
                    model.global_batch, bench_figures(model.active_changes, rank_hosts))
