"""The check's line per host under each exchange mode (trainer/lowcomm/modes.py), from the same
facts as the exact estimate (remote/checks/estimate_facts.py): each host's stored profile and
link. Shown when the run asks for ``exchange = "local"`` or some host would sit out of the exact
exchange; nothing when a fact is missing (the estimate rows name it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from remote.checks.estimate_facts import EstimateProbe, cluster_speeds
from remote.config.cluster import ClusterConfig
from trainer.balance.links import PairLink
from trainer.lowcomm.modes import host_modes, local_plan, modes_text, settings_text


def cluster_modes(config: ClusterConfig, nprocs: Mapping[str, int],
                  probes: Mapping[str, EstimateProbe],
                  interfaces: Mapping[str, str | None],
                  links: Sequence[PairLink] = ()) -> tuple[tuple[str, str], ...]:
    """``(host, line)`` per host, in cluster.toml order, from the facts the estimate reads
    (``cluster_speeds``); empty when not shown (see module)."""
    speeds, gradient_bytes = cluster_speeds(config, nprocs, probes, interfaces, links)
    missing = any(None in (s.fixed_s, s.per_sample_s, s.link_bytes_per_s) for s in speeds)
    if gradient_bytes is None or missing or len(config.hosts) < 2:
        return ()  # the estimate's rows name the missing fact
    run = config.run
    modes = host_modes(speeds, run.global_batch, gradient_bytes, run.round_exchange,
                       run.round_steps, compression=run.outer_compression,
                       overlap=run.outer_overlap)
    if modes is None or (run.exchange != "local" and all(m.exact_pays for m in modes)):
        return ()
    plan = local_plan(speeds, run.global_batch, gradient_bytes, run.round_exchange,
                      run.round_steps, compression=run.outer_compression,
                      overlap=run.outer_overlap)
    return tuple((m.host, f"{modes_text(m, plan)}\n" + settings_text(
        s, speeds, run.global_batch, gradient_bytes, run.round_exchange, run.round_steps))
        for m, s in zip(modes, speeds, strict=True))
