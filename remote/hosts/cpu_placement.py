"""CPU placement for a launch: each host's allocator, and cores for hosts that share a machine.

The trainer places its own ranks within a host (``trainer.placement``); what only the launch
plan can know is which hosts of cluster.toml are one machine (several ``local`` hosts, network
namespaces, sshd ports on one box): those share the machine's cores out between them first, so
their ranks never land on the same core while another idles. A machine is told by its kernel's
boot id, which every process on it shares (namespaces and containers too). When such hosts
have more ranks than the machine has cores (three ``local`` hosts on two cores), nothing is
pinned and each rank gets the machine's cores ÷ its ranks threads (at least 1), as torchrun's
``OMP_NUM_THREADS=1`` would, unless the host's ``threads`` says otherwise: never 3 ranks of 2
threads on 2 cores.

One probe section per host (``PROBE_SECTION``) gathers what this needs: the boot id, the cores
the host's processes may use, and the allocator libraries present. ``corral check`` reports the
choices (``check_items``); the launch turns them into environment and flags (``host_plans``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from remote.config.cluster import ClusterConfig, HostSection
from remote.events import CheckItem
from remote.hosts.allocator_setup import setup_advice
from trainer.placement import (
    PRELOADED,
    SHELL_LIBRARY_DIRS,
    allocator_candidates,
    allocator_env,
    choose_allocator,
    format_cpulist,
    parse_cpulist,
    split_cores,
)


def _probe_script() -> str:
    libs = " ".join(f"{name}={path}" for name, path in allocator_candidates(SHELL_LIBRARY_DIRS))
    return ("echo boot $(cat /proc/sys/kernel/random/boot_id 2>/dev/null); "
            "echo cpus $(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status); "
            f"for e in {libs}; do [ -e \"${{e#*=}}\" ] && echo lib \"${{e%%=*}}\" \"${{e#*=}}\"; "
            "done; true")


PROBE_SECTION = _probe_script()
"""Shell code printing ``boot ID``, ``cpus LIST`` and ``lib NAME PATH`` lines (best first)."""


@dataclass(frozen=True, kw_only=True)
class HostCpuFacts:
    """What a host's probe said about its CPU side."""

    boot_id: str | None = None
    """The kernel's boot id: hosts with the same one share a machine."""
    cpus: frozenset[int] | None = None
    """Cores the host's processes may run on (None: not known)."""
    libraries: Mapping[str, str] = field(default_factory=dict)
    """Preloadable allocators present: name -> library path."""


def parse_probe(text: str) -> HostCpuFacts:
    """``PROBE_SECTION``'s output as facts (unknown lines ignored)."""
    boot: str | None = None
    cpus: frozenset[int] | None = None
    libraries: dict[str, str] = {}
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "boot" and rest.strip():
            boot = rest.strip()
        elif word == "cpus" and rest.strip():
            try:
                cpus = parse_cpulist(rest)
            except ValueError:
                cpus = None
        elif word == "lib" and " " in rest.strip():
            name, path = rest.strip().split(" ", 1)
            if name in PRELOADED:
                libraries.setdefault(name, path)
    return HostCpuFacts(boot_id=boot, cpus=cpus, libraries=libraries)


@dataclass(frozen=True, kw_only=True)
class HostCpuPlan:
    """One host's part of the launch plan."""

    allocator: str
    """The allocator its ranks get (``tcmalloc``, ``jemalloc``, ``glibc`` or ``off``)."""
    env: Mapping[str, str]
    """Environment for its launcher (and so its ranks)."""
    flags: tuple[str, ...]
    """Trainer flags: ``--cores LIST`` for a share of a machine, ``--no-pin-cores``."""
    cores: str
    """Where its ranks run, in words (for ``corral check``)."""
    threads: int | None = None
    """Threads per rank the machine's sharing decides (None: the rank's own share of cores
    decides, or the host's ``threads``)."""


def _is_cpu_host(host: HostSection, gpus: int | None) -> bool:
    return host.gpus == 0 or (host.gpus == "auto" and gpus == 0)


@dataclass(frozen=True)
class _Share:
    cores: frozenset[int] | None
    """The host's part of the machine (None: more ranks than cores there, nothing pinned)."""
    why: str
    """The machine's sharing, in words."""
    threads: int = 1
    """Threads per rank: the machine's cores ÷ its ranks (at least 1)."""


def _machine_shares(config: ClusterConfig, facts: Mapping[str, HostCpuFacts],
                    nprocs: Mapping[str, int], gpus: Mapping[str, int | None]
                    ) -> dict[str, _Share]:
    """Per CPU host that shares its machine with other auto-pinned CPU hosts, its share of
    the machine's cores. Hosts alone are left out."""
    machines: dict[str, list[HostSection]] = {}
    for host in config.hosts:
        found = facts.get(host.name)
        if (found is None or found.boot_id is None or found.cpus is None or not host.pin_cores
                or host.cores is not None or not _is_cpu_host(host, gpus.get(host.name))):
            continue
        machines.setdefault(found.boot_id, []).append(host)
    shares: dict[str, _Share] = {}
    for members in machines.values():
        if len(members) < 2:
            continue
        cpus = facts[members[0].name].cpus or frozenset()
        ranks = [nprocs.get(h.name, 1) for h in members]
        per_rank = split_cores(cpus, sum(ranks))
        why = (f"{sum(ranks)} ranks of {len(members)} hosts on one machine with "
               f"{len(cpus)} core(s)")
        rank_offset = 0
        for host, count in zip(members, ranks, strict=True):
            mine = (None if per_rank is None else frozenset(
                c for share in per_rank[rank_offset:rank_offset + count] for c in share))
            shares[host.name] = _Share(mine, why, max(1, len(cpus) // sum(ranks)))
            rank_offset += count
    return shares


def _cores_text(host: HostSection, nproc: int, cpus: frozenset[int] | None,
                gpu_host: bool, share: _Share | None) -> str:
    if not host.pin_cores:
        return "not pinned (pin_cores = false)"
    if gpu_host:
        return "each GPU rank's data work on the cores near its GPU (NVML or /sys, at start)"
    if share is not None and share.cores is None:
        threads = host.threads or share.threads
        return f"not pinned: {share.why}, {threads} thread(s) per rank"
    if cpus is None:
        return "split between its ranks at start"
    per_rank = split_cores(cpus, nproc)
    if per_rank is None:
        return f"not pinned: {nproc} ranks share {len(cpus)} core(s) ({format_cpulist(cpus)})"
    threads = host.threads or min(len(s) for s in per_rank)
    where = " | ".join(format_cpulist(s) for s in per_rank)
    shared = f" (its share: {share.why})" if share is not None else ""
    return f"{nproc} rank(s) on cores {where}, {threads} thread(s) each{shared}"


def host_plans(config: ClusterConfig, facts: Mapping[str, HostCpuFacts],
               nprocs: Mapping[str, int], gpus: Mapping[str, int | None]
               ) -> dict[str, HostCpuPlan]:
    """Every host's allocator environment and core flags (a host without facts gets tuned
    glibc, or what it asked for, and places its ranks itself)."""
    shares = _machine_shares(config, facts, nprocs, gpus)
    plans: dict[str, HostCpuPlan] = {}
    for host in config.hosts:
        found = facts.get(host.name, HostCpuFacts())
        choice = choose_allocator(host.allocator, found.libraries)
        env = allocator_env(choice, found.libraries, host.env.get("LD_PRELOAD"))
        flags: list[str] = []
        cpus = found.cpus
        if host.cores is not None:
            flags += ["--cores", host.cores]
            cpus = parse_cpulist(host.cores) & cpus if cpus else parse_cpulist(host.cores)
        share = shares.get(host.name)
        if share is not None:
            cpus = share.cores
            flags += ["--cores", format_cpulist(cpus)] if cpus else ["--no-pin-cores"]
        if not host.pin_cores:
            flags.append("--no-pin-cores")
        threads = (share.threads if share is not None and share.cores is None
                   and host.threads is None else None)
        text = _cores_text(host, nprocs.get(host.name, 1), cpus,
                           not _is_cpu_host(host, gpus.get(host.name)), share)
        plans[host.name] = HostCpuPlan(allocator=choice, env=env, flags=tuple(flags), cores=text,
                                       threads=threads)
    return plans


def check_items(config: ClusterConfig, facts: Mapping[str, HostCpuFacts],
                nprocs: Mapping[str, int], gpus: Mapping[str, int | None]) -> list[CheckItem]:
    """``allocator`` and ``cores`` items for every host that answered its probe."""
    plans = host_plans(config, facts, nprocs, gpus)
    items: list[CheckItem] = []
    for host in config.hosts:
        if host.name not in facts:
            continue
        plan, found = plans[host.name], facts[host.name]
        items.append(_allocator_item(host, plan.allocator, found))
        items.append(CheckItem(host=host.name, name="cores", ok=True, detail=plan.cores))
    return items


def _allocator_item(host: HostSection, choice: str, found: HostCpuFacts) -> CheckItem:
    if host.allocator in PRELOADED and host.allocator not in found.libraries:
        return CheckItem(
            host=host.name, name="allocator", ok=False,
            detail=f"allocator = {host.allocator!r}, but {host.name} has no lib{host.allocator}",
            hint=f"install it on {host.name} ({setup_advice()}), or set allocator = \"auto\" "
                 f"in the [[hosts]] entry named {host.name!r} of cluster.toml")
    if choice in PRELOADED:
        detail = f"{choice} ({found.libraries[choice]}), preloaded into every rank"
    elif choice == "glibc":
        detail = ("glibc, tuned to keep freed memory (no tcmalloc or jemalloc here; "
                  f"faster CPU ranks: {setup_advice()})" if host.allocator == "auto"
                  else "glibc, tuned to keep freed memory")
    else:
        detail = "glibc defaults (allocator = \"off\")"
    return CheckItem(host=host.name, name="allocator", ok=True, detail=detail)
