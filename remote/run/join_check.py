"""The pre-flight check of a host joining a running run, reusing the run's launch check.

The run's hosts were checked when the run was launched, and their ranks run what was found
then: ``run.json`` keeps it (``RunInfo.checked``: each host's torch, precision, the backend and
the address its ranks use, ``join_match.launch_checked``). A join therefore probes only the
joiner (its Python, torch, GPUs, disk, code, memory: the probes of a launch) and tests only the
links between the joiner and each of the run's hosts, at the addresses recorded. A record
written by an older corral (no addresses) gets the launch's full check of every host instead
(``check_and_plan``, ``join.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from remote.checks import run_root
from remote.checks.estimate_facts import cluster_speeds
from remote.checks.host_facts import HostFacts
from remote.checks.memory_facts import memory_items
from remote.checks.mesh_verdict import mesh_check
from remote.checks.plan import LaunchFacts, master_address, nproc_for
from remote.checks.preflight import probe_host, unreachable_item
from remote.config.cluster import ClusterConfig
from remote.config.task_code import UserCode
from remote.events import CheckItem, CheckReport
from remote.hosts import cpu_placement
from remote.hosts.cpu_placement import HostCpuFacts
from remote.hosts.pool import HostPool
from remote.records.runs import RunInfo
from trainer.balance.links import PairLink


def recorded_addresses(info: RunInfo) -> dict[str, str] | None:
    """The address each of the run's hosts' ranks use, as its launch check recorded them;
    None when the record lacks one of them (written by an older corral)."""
    found = (info.checked or {}).get("address")
    if not isinstance(found, Mapping):
        return None
    addresses = {str(k): v for k, v in found.items() if isinstance(v, str) and v}
    return addresses if all(h in addresses for h in info.hosts) else None


def recorded_facts(info: RunInfo) -> tuple[dict[str, int | None], dict[str, HostCpuFacts]]:
    """The run's hosts' GPU counts and CPU facts as the launch check recorded them (a host
    without them: not known, as a host that did not answer)."""
    checked = info.checked or {}
    gpus, cpu = checked.get("gpus"), checked.get("cpu")
    counts: dict[str, int | None] = {h: n if isinstance(n, int) else None
                                     for h, n in (gpus if isinstance(gpus, Mapping)
                                                  else {}).items() if h in info.hosts}
    cores: dict[str, HostCpuFacts] = {}
    for name, found in (cpu if isinstance(cpu, Mapping) else {}).items():
        if name in info.hosts and isinstance(found, Mapping):
            boot, listed = found.get("boot"), found.get("cpus")
            numbers = [c for c in listed if isinstance(c, int)] if isinstance(listed, list) else []
            cores[name] = HostCpuFacts(boot_id=boot if isinstance(boot, str) else None,
                                       cpus=frozenset(numbers) or None)
    return counts, cores


async def check_joiner(config: ClusterConfig, pool: HostPool, info: RunInfo, host: str, *,
                       user: UserCode | None, code_digest: str,
                       ) -> tuple[CheckReport, LaunchFacts] | None:
    """The join's check of ``host`` in ``config`` (the run's hosts and the joiner, ``pool``
    over them): the joiner probed, its links with the run's hosts tested, the run's hosts'
    own facts taken from ``info``'s record. Its report holds the joiner's items and the
    links' (the run's hosts' were judged at the launch); None when the record does not hold
    what the check needs (``check_and_plan`` then)."""
    addresses = recorded_addresses(info)
    if addresses is None:
        return None
    master_addr = master_address(config)
    try:
        transport = await pool.get(host)
    except Exception as exc:  # any failure to log in refuses the join, said as the check says it
        return CheckReport(items=(unreachable_item(pool.host(host), exc),)), LaunchFacts(
            gpus={}, interfaces={}, port=None)
    joiner = await probe_host(transport, config, master_addr, user, None, code_digest)
    facts = {name: HostFacts(python_ok=True, address=address)
             for name, address in addresses.items() if name in info.hosts}
    facts[host] = joiner
    mesh, measured = await mesh_check(config, pool, facts, master_addr, hub=host)
    links = measured.links if measured is not None else ()
    items = [run_root.local_item(config.cluster.run_root), *joiner.items, *mesh,
             *_joiner_items(config, host, joiner, links)]
    gpus, cpu = recorded_facts(info)
    found = LaunchFacts(gpus={**gpus, host: joiner.gpus}, interfaces={host: joiner.interface},
                        port=None, cpu={**cpu, **({host: joiner.cpu} if joiner.cpu else {})},
                        bf16={host: tuple(joiner.bf16)} if joiner.bf16 else {}, links=links,
                        code_present={host: joiner.code_present},
                        torch={host: joiner.torch}, addresses={host: joiner.address})
    return CheckReport(items=tuple(items), links=links, timings=tuple(joiner.timings)), found


def _joiner_items(config: ClusterConfig, host: str, facts: HostFacts,
                  links: Sequence[PairLink]) -> list[CheckItem]:
    """The joiner's CPU placement and state memory rows: a live run replicates its state, so
    the joiner's ranks each hold a whole copy whatever the run's hosts hold."""
    section = next(h for h in config.hosts if h.name == host)
    nprocs = {host: nproc_for(section, facts.gpus)}
    gpus = {host: facts.gpus}
    cpu = {host: facts.cpu} if facts.cpu is not None else {}
    alone = replace(config, cluster=replace(config.cluster, master=host), hosts=(section,))
    speeds = cluster_speeds(alone, nprocs, {host: facts.estimate}, {}, links)[1]
    return [*cpu_placement.check_items(alone, cpu, nprocs, gpus),
            *memory_items(alone, nprocs, gpus, {host: facts.memory}, speeds)]
