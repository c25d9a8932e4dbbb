"""The facts of the pre-run estimate (trainer/balance/estimate.py) as the check finds them.

The check's probe of each host (one section of its one shell command, ``estimate_probe``)
prints the host's name, the link speed of each of its interfaces
(``/sys/class/net/<interface>/speed``) and the stored profiles of the run's model
(``corral profile`` saves them in the host's own store, ``profiles.store``). Each host's
compute line is its newest profile made there at its slowdown (and threads, when set), which
also records the model's gradient bytes; its link is the one the full-mesh check measured
(``remote/checks/mesh.py``: the fastest of its pairs, each the slower of its two directions),
else ``link_gbit`` from cluster.toml, else the speed of the interface the check found.
Loopback, Wi-Fi and virtual links show no speed: without a measurement the estimate then says
the link is not known instead of guessing.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from profiles.profile import Profile, created_at, profile_from_toml
from profiles.store import slug
from remote.config.cluster import ClusterConfig, HostSection
from trainer.balance.estimate import HostSpeed, HostVerdict, estimate
from trainer.balance.links import PairLink, host_links

NET_CLASS = "/sys/class/net"
"""Where Linux shows each interface's link speed (Mbit/s, in ``<interface>/speed``)."""
PROFILE_MARK = "@@profile"
"""The line before each stored profile in the probe's output."""
MAX_PROFILE_BYTES = 65536
"""More of one profile file than this is not read (a profile is well under 1 KB)."""
PROFILE_ROOT = ('"${CORRAL_PROFILE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/corral/profiles}"')
"""Shell: the host's profile store, as ``profiles.store.default_root`` finds it."""


@dataclass(frozen=True, kw_only=True)
class EstimateProbe:
    """What one host's estimate section printed."""

    node: str = ""
    """The host's name as its profiles record it (``uname -n``)."""
    profiles: tuple[Profile, ...] = ()
    """Its stored profiles of the run's model (made on any host that shares the store)."""
    link_mbit: dict[str, float] = field(default_factory=dict)
    """Per interface that shows one, its link speed in Mbit/s."""


def estimate_probe(model: str, net_class: str = NET_CLASS) -> str:
    """The probe's shell: ``node NAME``, ``speed INTERFACE MBIT`` lines, then every stored
    profile of ``model``, each after a ``PROFILE_MARK`` line."""
    return (f'r={PROFILE_ROOT}; case "$r" in "~"|"~/"*) r="$HOME${{r#"~"}}";; esac; '
            'echo "node $(uname -n)"; '
            f'for f in {shlex.quote(net_class)}/*/speed; do s=$(cat "$f" 2>/dev/null) && '
            'i=${f%/speed} && echo "speed ${i##*/} $s"; done; '
            f'for f in "$r"/*/{shlex.quote(slug(model))}/*.toml; do [ -f "$f" ] || continue; '
            f'echo {PROFILE_MARK}; head -c {MAX_PROFILE_BYTES} "$f"; echo; done; true')


def parse_estimate_probe(text: str) -> EstimateProbe:
    """``estimate_probe``'s output (a file that is no profile is left out)."""
    node = ""
    speeds: dict[str, float] = {}
    chunks: list[list[str]] = []
    for line in text.splitlines():
        if line == PROFILE_MARK:
            chunks.append([])
        elif chunks:
            chunks[-1].append(line)
        elif line.startswith("node "):
            node = line[5:].strip()
        elif line.startswith("speed ") and len(words := line.split()) == 3:
            try:
                speeds[words[1]] = float(words[2])
            except ValueError:
                continue
    profiles = []
    for chunk in chunks:
        try:
            profiles.append(profile_from_toml("\n".join(chunk)))
        except ValueError:  # a broken file is no profile: the estimate asks for one
            continue
    return EstimateProbe(node=node, profiles=tuple(profiles), link_mbit=speeds)


def host_profile(host: HostSection, model: str, found: EstimateProbe) -> Profile | None:
    """The newest profile of ``model`` made on the host at its slowdown (and threads, when
    set); None when it has none."""
    matching = [p for p in found.profiles
                if p.host == found.node and p.model == model
                and p.slowdown == float(host.slowdown)
                and (host.threads is None or p.threads == host.threads)]
    return max(matching, key=created_at) if matching else None


def host_link(host: HostSection, interface: str | None, found: EstimateProbe,
              measured: float | None = None) -> float | None:
    """Bytes/s of the host's link: as measured, else ``link_gbit``, else its interface's speed
    when it shows one."""
    if measured is not None:
        return measured
    if host.link_gbit is not None:
        return host.link_gbit * 1e9 / 8
    mbit = found.link_mbit.get(interface or "")
    return mbit * 1e6 / 8 if mbit is not None and mbit > 0 else None


def host_speeds(config: ClusterConfig, nprocs: Mapping[str, int],
                profiles: Mapping[str, Profile | None],
                links: Mapping[str, float | None]) -> list[HostSpeed]:
    """Every host's facts, in cluster.toml order (None where a fact is not known)."""
    speeds = []
    for host in config.hosts:
        profile = profiles.get(host.name)
        speeds.append(HostSpeed(name=host.name, ranks=nprocs[host.name],
                                fixed_s=profile.a if profile else None,
                                per_sample_s=profile.c if profile else None,
                                link_bytes_per_s=links.get(host.name)))
    return speeds


def cluster_speeds(config: ClusterConfig, nprocs: Mapping[str, int],
                   probes: Mapping[str, EstimateProbe], interfaces: Mapping[str, str | None],
                   links: Sequence[PairLink] = ()) -> tuple[list[HostSpeed], int | None]:
    """Every host's facts from what its probe found (an unreachable host has none: missing)
    and its link (as the full-mesh check measured it, else ``link_gbit``, else its interface's
    speed), and the largest gradient the profiles recorded (None: none recorded one)."""
    measured = host_links(links)
    found = {h.name: probes.get(h.name, EstimateProbe()) for h in config.hosts}
    profiles = {h.name: host_profile(h, config.run.model, found[h.name]) for h in config.hosts}
    rates = {h.name: host_link(h, interfaces.get(h.name), found[h.name], measured.get(h.name))
             for h in config.hosts}
    sizes = [p.gradient_bytes for p in profiles.values() if p and p.gradient_bytes]
    return host_speeds(config, nprocs, profiles, rates), max(sizes) if sizes else None


def cluster_estimate(config: ClusterConfig, nprocs: Mapping[str, int],
                     probes: Mapping[str, EstimateProbe],
                     interfaces: Mapping[str, str | None],
                     links: Sequence[PairLink] = ()) -> tuple[HostVerdict, ...]:
    """The estimate of ``config``'s run from the hosts' facts (``cluster_speeds``)."""
    speeds, gradient_bytes = cluster_speeds(config, nprocs, probes, interfaces, links)
    if gradient_bytes is None:  # profiles made before the gradient size was recorded
        return tuple(HostVerdict(host=s.name, missing="profile") for s in speeds)
    return estimate(speeds, config.run.global_batch, gradient_bytes, config.run.shard_state)
