"""The run against its hosts alone: **% of Σ solo** and **× fastest host**, defined once.

A host's **solo** throughput is what it trains alone: Σ over its ranks of each device's
forward+backward samples/s at the run's micro-batch (``capacity`` event: a stored profile, a
probe timed at the run's start or its cache, ``profiles/solo.py``). From them and the run's
steps:

- **% of Σ solo** = the cluster's samples/s / Σ of every host's solo samples/s: how much of
  what the machines do alone the run gets (1.0: all of it, the exchange and the waiting cost
  nothing);
- **× fastest** = the cluster's samples/s / the fastest host's solo samples/s: whether adding
  the others paid (below 1.0 the fastest host alone would have been faster).

The solo figures leave out the optimizer step and a step's fixed work, which the cluster pays:
both ratios are a little below what a host trained alone would show. A host whose figure is
unknown leaves both ratios unknown (``sources`` says which). The console's header (live: the
newest step every rank reported) and ``corral report`` (the whole run) read them from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from figures.metrics import StepRow, ratio
from figures.reducer import RunFigures

LOW_OF_SUM = 0.9
"""Below this share of Σ solo the header says why."""
EXCHANGE_HEAVY = 0.3
"""From this outside-compute fraction the exchange and per-step work are the reason given."""
WAITING_HEAVY = 0.8
"""Below this compute share the ranks' waiting for the slowest is the reason given."""


@dataclass(frozen=True, kw_only=True)
class HostSolo:
    """One host's solo figure."""

    host: str
    samples_per_s: float | None
    """Σ of its ranks' solo samples/s (None: one of them is not known)."""
    source: str
    """``profile``, ``probe``, ``profile+probe`` (its ranks differ) or ``unknown``."""


@dataclass(frozen=True, kw_only=True)
class SoloBaseline:
    """The run's two baselines and where their solo figures came from."""

    cluster_samples_per_s: float | None
    hosts: tuple[HostSolo, ...]
    of_sum: float | None
    """Cluster samples/s / Σ solo (None: a host's solo figure, or the cluster's, unknown)."""
    x_fastest: float | None
    """Cluster samples/s / the fastest host's solo samples/s."""
    reason: str = ""
    """Why a ratio is low (a host benched, the exchange, the waiting); "" when neither is."""
    advice: str = ""
    """When the cluster is slower than its fastest host alone: that, and what would fix it."""

    @property
    def sum_solo(self) -> float | None:
        rates = [h.samples_per_s for h in self.hosts]
        return sum(r for r in rates if r is not None) if rates and None not in rates else None

    @property
    def fastest(self) -> HostSolo | None:
        known = [h for h in self.hosts if h.samples_per_s is not None]
        return max(known, key=lambda h: h.samples_per_s or 0.0) if known else None

    @property
    def sources(self) -> str:
        """``solo: profile`` / ``solo: probe`` / ``solo: profile a, probe b`` / with
        ``unknown c``: where the solo figures came from, per host when they differ."""
        kinds = {h.source for h in self.hosts}
        if not kinds:
            return "solo: unknown"
        if len(kinds) == 1:
            return f"solo: {kinds.pop()}"
        return "solo: " + ", ".join(f"{h.source} {h.host}" for h in self.hosts)


def host_solos(hosts: Sequence[str], rates: Sequence[float | None],
               sources: Sequence[str]) -> tuple[HostSolo, ...]:
    """Per host (in order of first rank), Σ of its ranks' solo figures (by rank)."""
    by_host: dict[str, list[int]] = {}
    for rank, host in enumerate(hosts):
        by_host.setdefault(host, []).append(rank)
    out = []
    for host, ranks in by_host.items():
        known = [rates[r] for r in ranks if r < len(rates)]
        kinds = sorted({sources[r] if r < len(sources) else "unknown" for r in ranks})
        whole = len(known) == len(ranks) and None not in known
        source = "unknown" if not whole else "+".join(kinds)
        out.append(HostSolo(host=host, samples_per_s=sum(r or 0.0 for r in known)
                            if whole else None, source=source))
    return tuple(out)


def baseline_of(hosts: tuple[HostSolo, ...], cluster: float | None, *,
                benched: Sequence[str] = (), outside_compute: float | None = None,
                compute_share: float | None = None) -> SoloBaseline:
    """The two ratios from the hosts' solo figures and the cluster's samples/s, with the
    reason when either is low (the first that holds: a host benched, the exchange and
    per-step work, the ranks' waiting) and the advice when the fastest host alone wins."""
    draft = SoloBaseline(cluster_samples_per_s=cluster, hosts=hosts, of_sum=None,
                         x_fastest=None)
    total, fastest = draft.sum_solo, draft.fastest
    of_sum = ratio(cluster, total) if cluster is not None and total else None
    x_fastest = (ratio(cluster, fastest.samples_per_s or 0.0)
                 if cluster is not None and fastest is not None and total else None)
    low = (of_sum is not None and of_sum < LOW_OF_SUM) or (x_fastest is not None
                                                           and x_fastest < 1.0)
    reason = _reason(benched, outside_compute, compute_share) if low else ""
    advice = ""
    if x_fastest is not None and x_fastest < 1.0 and fastest is not None:
        advice = (f"slower than {fastest.host} alone ({fastest.samples_per_s:.0f} samples/s):"
                  f" train on {fastest.host} alone, or with policy = \"dynamic\" let the"
                  " hosts whose exchange does not pay sit out (a faster link makes it pay)")
    return SoloBaseline(cluster_samples_per_s=cluster, hosts=hosts, of_sum=of_sum,
                        x_fastest=x_fastest, reason=reason, advice=advice)


def _reason(benched: Sequence[str], outside_compute: float | None,
            compute_share: float | None) -> str:
    if benched:
        return f"{', '.join(benched)} benched (no share: its exchange does not pay)"
    if outside_compute is not None and outside_compute >= EXCHANGE_HEAVY:
        return (f"the exchange and per-step work take {outside_compute:.0%} of a step"
                " (outside every rank's forward+backward)")
    if compute_share is not None and compute_share < WAITING_HEAVY:
        return f"ranks wait for the slowest: compute share {compute_share:.0%}"
    return "the solo figures leave out the optimizer and per-step work the run pays"


def benched_hosts(figures: RunFigures, row: StepRow | None) -> list[str]:
    """Hosts every rank of which had no share in ``row``."""
    if row is None:
        return []
    hosts: dict[str, bool] = {}
    for rank, cell in row.cells.items():
        host = figures.ranks[rank].host if rank in figures.ranks else f"rank {rank}"
        hosts[host] = hosts.get(host, True) and cell.local_batch == 0
    return [host for host, idle in hosts.items() if idle]


def run_solos(figures: RunFigures) -> tuple[HostSolo, ...]:
    """Every host's solo figure from rank 0's ``capacity`` event (none before it)."""
    event = figures.capacity
    if event is None:
        return ()
    ranks = len(event.solo_samples_per_s) or len(event.samples_per_s)
    hosts = [figures.ranks[r].host if r in figures.ranks else f"rank {r}" for r in range(ranks)]
    rates = event.solo_samples_per_s or (None,) * ranks
    sources = event.solo_source or ("unknown",) * ranks
    return host_solos(hosts, rates, sources)


def run_baseline(figures: RunFigures, *, live: bool) -> SoloBaseline:
    """The run's baselines: of the whole run (``corral report``, a finished run's header),
    or, ``live``, of the newest step every rank reported."""
    row = figures.latest_complete_row()
    if live:
        cluster = row.samples_per_s if row is not None else None
        share = (ratio(row.max_compute_s, row.step_s) if row is not None and row.step_s
                 else None)
        outside = None if share is None else max(0.0, 1.0 - share)
        compute_share = (ratio(row.samples_per_s or 0.0, row.ideal_samples_per_s or 0.0)
                         if row is not None else None)
    else:
        cluster, outside = figures.mean_samples_per_s, figures.outside_compute_fraction
        compute_share = figures.efficiency
    return baseline_of(run_solos(figures), cluster, benched=benched_hosts(figures, row),
                       outside_compute=outside, compute_share=compute_share)
