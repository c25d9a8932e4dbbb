"""Before a run: what each host would do under each exchange mode, with the predicted
throughput (for ``corral check``; the exact mode's decision is trainer/balance/estimate.py's).

- ``exact``: the balancer's best plan; a host either trains (pays for its exchange) or sits out.
- ``local``: every host is an island; an island of ``n`` ranks with the compute line
  ``a + c·b`` per rank trains ``global_batch / (a + c·global_batch/n)`` samples per second
  (its intra-host exchange left out). The round is made long enough that the exchange between
  islands, predicted from each host's link (``exchange_seconds``), is at most ``round_exchange``
  of it (``round_steps_for``); the cluster trains the islands' summed speed over the inner part
  of each round.
- ``sit out``: the exact plan without the host.

The link speed per host is this module's input (``HostSpeed.link_bytes_per_s``): today
``[[hosts]] link_gbit`` or the interface's speed; a measured per-host link plugs in there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trainer.balance.estimate import HostSpeed, cluster_plan, estimate
from trainer.lowcomm.plan import chosen_round_steps, exchange_seconds
from trainer.lowcomm.sizes import sent_bytes
from trainer.settings.run_settings import OuterCompression

SETTINGS: tuple[tuple[OuterCompression, bool], ...] = (
    ("none", False), ("int8", False), ("int4", False), ("int8", True), ("int4", True))
"""The ``(outer_compression, outer_overlap)`` settings ``corral check`` compares."""


@dataclass(frozen=True, kw_only=True)
class LocalPlan:
    """The predicted local-mode run."""

    samples_per_s: float
    """The cluster's throughput, rounds' exchange included."""
    round_steps: int
    """Inner steps per island per round."""
    exchange_s: float
    """One round's exchange between islands."""
    round_s: float
    """One round, inner steps and exchange."""


@dataclass(frozen=True, kw_only=True)
class HostModes:
    """One host under each mode (throughputs of the whole cluster, samples per second)."""

    host: str
    exact_pays: bool
    """Under ``exact``: True when the host trains, False when it would sit out."""
    exact_samples_per_s: float
    local_samples_per_s: float
    local_adds_samples_per_s: float
    """What the host's island trains per second in local mode, its share of the exchange
    included."""
    sit_out_samples_per_s: float
    """The exact cluster without the host (0 when it is the only one)."""


def island_speed(host: HostSpeed, global_batch: int) -> float:
    """Samples per second of the host as one island (its ranks share each inner batch)."""
    seconds = (host.fixed_s or 0.0) + (host.per_sample_s or 0.0) * global_batch / host.ranks
    return global_batch / seconds if seconds > 0 else 0.0


def compressed_share(parameter_bytes: float, compression: OuterCompression,
                     islands: int) -> float:
    """The bytes one exchange sends under ``compression``, over the float32 all-reduce's."""
    numel = max(int(parameter_bytes // 4), 1)  # float32 changes
    plain = sent_bytes(numel, "none", islands)
    return sent_bytes(numel, compression, islands) / plain if plain else 0.0


def local_plan(hosts: Sequence[HostSpeed], global_batch: int, parameter_bytes: float,
               round_exchange: float, round_steps: int | None = None, *,
               compression: OuterCompression = "none", overlap: bool = False) -> LocalPlan:
    """The local-mode run of ``hosts`` (every fact known), one island per host, with the
    exchange's ``compression`` and ``overlap``."""
    speeds = [island_speed(h, global_batch) for h in hosts]
    total = sum(speeds)
    links = [(h.link_bytes_per_s or 0.0) * 8 / 1e6 for h in hosts]
    exchange = (exchange_seconds(int(parameter_bytes), links)
                * compressed_share(parameter_bytes, compression, len(hosts))
                if len(hosts) > 1 else 0.0)
    # All islands' inner steps end together: one inner step of the cluster takes
    # islands·B/Σspeed seconds per island's step on average.
    step_s = len(hosts) * global_batch / total if total > 0 else 0.0
    steps = round_steps or chosen_round_steps(exchange, step_s, round_exchange, overlap)
    inner_s = steps * step_s
    # Overlapped, the exchange runs behind the next round: only what outlasts it is exposed.
    round_s = inner_s + (max(0.0, exchange - inner_s) if overlap else exchange)
    return LocalPlan(samples_per_s=total * inner_s / round_s if round_s > 0 else 0.0,
                     round_steps=steps, exchange_s=exchange, round_s=round_s)


def host_modes(hosts: Sequence[HostSpeed], global_batch: int, parameter_bytes: float,
               round_exchange: float, round_steps: int | None = None, *,
               compression: OuterCompression = "none", overlap: bool = False
               ) -> tuple[HostModes, ...] | None:
    """Each host under each mode, in host order; None when a fact is missing (the exact
    estimate names it)."""
    verdicts = estimate(hosts, global_batch, parameter_bytes)
    full = cluster_plan(hosts, global_batch, parameter_bytes)
    if full is None or any(v.missing for v in verdicts):
        return None
    exact_x = global_batch / full.total_s
    local = local_plan(hosts, global_batch, parameter_bytes, round_exchange, round_steps,
                       compression=compression, overlap=overlap)
    share = local.samples_per_s / sum(island_speed(h, global_batch) for h in hosts)
    modes = []
    for host, verdict in zip(hosts, verdicts, strict=True):
        others = [h for h in hosts if h is not host]
        without = cluster_plan(others, global_batch, parameter_bytes) if others else None
        modes.append(HostModes(
            host=host.name, exact_pays=verdict.pays, exact_samples_per_s=exact_x,
            local_samples_per_s=local.samples_per_s,
            local_adds_samples_per_s=island_speed(host, global_batch) * share,
            sit_out_samples_per_s=global_batch / without.total_s if without else 0.0))
    return tuple(modes)


def settings_text(host: HostSpeed, hosts: Sequence[HostSpeed], global_batch: int,
                  parameter_bytes: float, round_exchange: float,
                  round_steps: int | None = None) -> str:
    """What each exchange setting costs over ``host``'s link (one round's exchange, seconds)
    and gives the cluster (samples per second, local mode)."""
    link = host.link_bytes_per_s or 0.0
    parts = []
    for compression, overlap in SETTINGS:
        seconds = (2 * (len(hosts) - 1) / len(hosts) * parameter_bytes / link
                   * compressed_share(parameter_bytes, compression, len(hosts))
                   if link > 0 else 0.0)
        plan = local_plan(hosts, global_batch, parameter_bytes, round_exchange, round_steps,
                          compression=compression, overlap=overlap)
        name = f"{compression}+overlap" if overlap else compression
        parts.append(f"{name} {seconds:.2f} s → {plan.samples_per_s:.0f} samples/s "
                     f"(H={plan.round_steps})")
    return f"`{host.name}` exchange per round and cluster: " + " · ".join(parts)


def modes_text(modes: HostModes, plan: LocalPlan) -> str:
    """One host's line: exact, local (approximate) and sit out, in samples per second."""
    exact = "trains" if modes.exact_pays else "sits out"
    return (f"`{modes.host}`: exact: {exact}, cluster {modes.exact_samples_per_s:.0f} samples/s"
            f" · local (approximate): trains as one island, +{modes.local_adds_samples_per_s:.0f}"
            f" samples/s, cluster {modes.local_samples_per_s:.0f} samples/s (rounds of "
            f"{plan.round_steps} steps, exchange {plan.exchange_s:.2f} s of {plan.round_s:.1f} s)"
            f" · sit out: cluster {modes.sit_out_samples_per_s:.0f} samples/s")
