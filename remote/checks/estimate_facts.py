"""The facts of the pre-run estimate (trainer/balance/estimate.py) as the check finds them.

Each host's compute line comes from its stored profile of the run's model at its slowdown
(``corral profile``), which also records the model's gradient bytes; its link speed from the
interface the check found (``/sys/class/net/<interface>/speed``). A fact not found makes the
estimate say what is missing instead of guessing. Today both are read on this machine, so
only ``local`` hosts find theirs; a remote host's estimate asks for its profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from profiles.host import hostname
from profiles.store import Profile, created_at, load_profile, model_dir
from remote.config.cluster import ClusterConfig, HostSection
from trainer.balance.estimate import HostSpeed, HostVerdict, estimate

NET_CLASS = Path("/sys/class/net")
"""Where Linux shows each interface's link speed (Mbit/s, in ``<interface>/speed``)."""


def local_profile(host: HostSection, model: str, root: Path | None = None) -> Profile | None:
    """The newest profile of ``model`` made on this machine at the host's slowdown (and
    threads, when set); None when there is none or the host is not this machine."""
    if not host.is_local:
        return None
    here = hostname()
    found = []
    for path in model_dir(host=here, model=model, root=root).glob("*.toml"):
        try:
            profile = load_profile(path)
        except Exception:  # a broken file is no profile: the estimate asks for one
            continue
        if (profile.host == here and profile.model == model
                and profile.slowdown == float(host.slowdown)
                and (host.threads is None or profile.threads == host.threads)):
            found.append(profile)
    return max(found, key=created_at) if found else None


def local_link(host: HostSection, interface: str | None,
               net_class: Path = NET_CLASS) -> float | None:
    """Bytes/s of the host's link when it is this machine and its interface shows a speed."""
    if not host.is_local or not interface:
        return None
    try:
        mbit = float((net_class / interface / "speed").read_text().strip())
    except (OSError, ValueError):  # loopback and virtual links show none
        return None
    return mbit * 1e6 / 8 if mbit > 0 else None


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


def cluster_estimate(config: ClusterConfig, nprocs: Mapping[str, int],
                     profiles: Mapping[str, Profile | None],
                     links: Mapping[str, float | None]) -> tuple[HostVerdict, ...]:
    """The estimate of ``config``'s run from what is known (see the module docstring)."""
    sizes = [p.gradient_bytes for p in profiles.values() if p and p.gradient_bytes]
    speeds = host_speeds(config, nprocs, profiles, links)
    if not sizes:  # profiles made before the gradient size was recorded: make them again
        return tuple(HostVerdict(host=s.name, missing="profile") for s in speeds)
    return estimate(speeds, config.run.global_batch, max(sizes))
