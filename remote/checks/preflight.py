"""Pre-flight checks of a cluster (``corral check``, and the first phase of ``corral run``).

Every host is checked in parallel, with one shell command per host (SSH sessions are slow to
open): reachable and authenticated, Python and torch versions (torch must match across hosts),
CUDA and GPU count, free disk in the workdir, a usable run_root (``remote.checks.run_root``,
also on this machine), leftover processes of earlier runs, the interface that routes to the
master. Alongside, the rendezvous port is tested for real (``remote.checks.rendezvous_port``).
Each failure carries a hint with the exact fix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from profiles.user_errors import CorralError
from remote.checks import run_root
from remote.checks.container_check import (
    ENGINE_SECTION,
    container_hints,
    container_parts,
    engine_down,
    judge_container,
)
from remote.checks.estimate_facts import (
    cluster_estimate,
    cluster_speeds,
    estimate_probe,
    parse_estimate_probe,
)
from remote.checks.group_timeout import group_timeout_items
from remote.checks.host_basics import item, judge_disk, judge_interface, judge_python
from remote.checks.host_facts import HostFacts
from remote.checks.leftover_runs import LEFTOVER_PROBE, judge_leftovers
from remote.checks.membership_port import check_membership_port
from remote.checks.memory_facts import MEMORY_PROBE, memory_items, parse_memory_probe
from remote.checks.mesh_verdict import mesh_check
from remote.checks.mode_facts import cluster_modes
from remote.checks.plan import LaunchFacts, master_address, node_address, nproc_for
from remote.checks.platform_check import (
    PLATFORM_PROBE,
    judge_platform,
    native_windows,
    windows_item,
)
from remote.checks.rendezvous_port import (
    PortListener,
    auto_candidate,
    check_rendezvous_port,
    connect_command,
    connect_item,
    held_item,
)
from remote.checks.script_imports import (
    imports_probe,
    judge_imports,
    left_out_items,
    script_keys_items,
)
from remote.checks.task_packages import judge_packages, packages_probe
from remote.checks.torch_versions import judge_precision, torch_item
from remote.checks.trackers import tracker_items
from remote.config.cluster import ClusterConfig, HostSection
from remote.config.live_membership import wants_membership_port
from remote.config.task_code import UserCode, user_code
from remote.events import CheckItem, CheckReport, CheckTiming
from remote.hosts import cpu_placement
from remote.hosts.command_errors import CompletedCommand, HostKeyNotTrusted
from remote.hosts.interpreter import TORCH_PROBE_PY, python_c
from remote.hosts.login_shell import BANNER_HINT, LoginShellRefused, banner_warning
from remote.hosts.netif import interface_script, run_address
from remote.hosts.pool import HostPool
from remote.hosts.push import present_command
from remote.hosts.sections import MISSING, section_text, sectioned_script, split_sections
from remote.hosts.transport import Transport, shell_path
from trainer.balance.links import PairLink

PROBE_TIMEOUT_S = 120.0
"""Seconds allowed for the Python probe (importing torch can take a while on a cold disk)."""


def probe_script(host: HostSection, config: ClusterConfig, master_addr: str,
                 user: UserCode | None, port: int | None = None,
                 code_digest: str | None = None) -> str:
    """Every per-host probe as one shell command (one SSH session: they are slow to open).

    With ``port``, a worker's probe also runs its side of the rendezvous-port test (the
    master's listener runs alongside), in the background while the other probes run, so that
    test costs no command and little time of its own. With ``code_digest`` it also tells
    whether that code tree is present already (the push then asks nothing more). ``user`` is
    the run's user code (its script's imports are probed).
    """
    is_master = host.name == config.cluster.master
    parts = {
        "python": f"{python_c(host, TORCH_PROBE_PY)} 2>&1",
        "home": 'printf "%s\\n" "$HOME"',
        # df needs an existing path: the nearest existing directory at or above the workdir.
        "disk": (f'd={shell_path(host.workdir)}; while [ ! -e "$d" ]; do d=$(dirname "$d"); '
                 'done; df -Pk "$d" 2>&1 | tail -n 1'),
        "ps": LEFTOVER_PROBE,
        "run-root": run_root.probe_command(config.cluster.run_root),
        "interface": f"{interface_script(master_addr, is_master=is_master)} 2>&1",
        "cpu": cpu_placement.PROBE_SECTION,
        "estimate": estimate_probe(config.run.model),
        "memory": MEMORY_PROBE,
        "platform": PLATFORM_PROBE,
    }
    boxed = container_parts(host)
    engine = {ENGINE_SECTION: boxed.pop(ENGINE_SECTION)} if boxed else {}
    parts.update(boxed)
    if host.interface is not None:
        parts["links"] = "ip -o addr show 2>&1"
    if code_digest is not None:
        parts["code"] = present_command(host.workdir, code_digest)
    packages = packages_probe(host, config)
    if packages is not None:
        parts["packages"] = packages
    imports = imports_probe(host, config, user)
    if imports is not None:
        parts["imports"] = imports
    prelude = ""
    if port is not None and not is_master:
        # The connect retries until the listener is up: started first, collected last.
        prelude = ('c=$(mktemp 2>/dev/null || echo "/tmp/corral-port-test.$$"); '
                   f'{connect_command(host, master_addr, port)} >"$c" 2>&1 & cpid=$!; ')
        parts["rendezvous"] = 'wait "$cpid"; cat "$c"; rm -f "$c"'
    if engine:  # the container's engine first: hung or without its daemon, nothing else runs
        return (prelude + sectioned_script(engine) + '; [ -n "${corral_engine_down:-}" ] || { '
                + sectioned_script(parts) + "; }")
    return prelude + sectioned_script(parts)


AfterProbe = Callable[[Transport, "HostFacts"], Awaitable[None]]


async def probe_host(
    transport: Transport, config: ClusterConfig, master_addr: str, user: UserCode | None,
    port: int | None = None, code_digest: str | None = None, after: AfterProbe | None = None,
) -> HostFacts:
    """One host's probes over ``transport`` and their verdicts (``port``: its side of the
    rendezvous-port test; ``code_digest``: whether that code tree is there; ``after``: run
    once its probe is in)."""
    host = transport.host
    facts = HostFacts()
    facts.items.append(item(host, "reachable", True,
                             "this machine" if host.is_local else "connected"))
    began = time.monotonic()
    done = await _probe(transport, probe_script(host, config, master_addr, user, port,
                                                code_digest))
    if isinstance(done, CheckItem):
        facts.items.append(done)
        return facts
    facts.items += shell_items(transport)
    facts.timings.append(CheckTiming(host=host.name, name="probe",
                                     seconds=time.monotonic() - began))
    if native_windows(done.stdout + done.stderr):  # cmd or PowerShell: no probe ran
        facts.items.append(windows_item(host.name))
        return facts
    sections = split_sections(done.stdout)
    if engine_down(sections):  # one row: the engine, nothing probed through it
        facts.engine_down = True
        facts.items += judge_container(host, sections)[0]
        return facts
    if "rendezvous" in sections:
        facts.connect = sections["rendezvous"][0]
    if "code" in sections:
        facts.code_present = sections["code"][1] == 0
    if "cpu" in sections:
        facts.cpu = cpu_placement.parse_probe(sections["cpu"][0])
    facts.estimate = parse_estimate_probe(section_text(sections, "estimate"))
    facts.memory = parse_memory_probe(section_text(sections, "memory"))
    facts.address = run_address(section_text(sections, "interface"), section_text(
        sections, "links"), is_master=host.name == config.master_name, interface=host.interface)
    if after is not None:
        await _timed(after, transport, facts)
    facts.items.append(judge_platform(
        host.name, section_text(sections, "platform"), address=facts.address,
        ssh_address=node_address(config, host, master_addr)))
    boxed, starts = judge_container(host, sections)
    facts.items += boxed
    if starts:  # else the probes inside it did not run: the container's item says why
        judge_python(host, *sections.get("python", (done.stderr, 1)), facts)
        ran = _as_probed(host, facts)
        facts.items += judge_packages(ran, config, *sections.get("packages", MISSING))
        facts.items += judge_imports(ran, config, user, *sections.get("imports", MISSING))
        facts.items = container_hints(host, facts.items)
    judge_precision(host, config.run.precision, facts)
    judge_disk(host, section_text(sections, "disk"), facts)
    facts.items.append(run_root.judge(host.name, config.cluster.run_root,
                                      section_text(sections, "run-root")))
    judge_leftovers(host, config, section_text(sections, "home"),
                     sections["ps"][0] if "ps" in sections else None, facts)
    judge_interface(host, config, master_addr, sections, facts)
    return facts


async def _probe(transport: Transport, script: str) -> CompletedCommand | CheckItem:
    """The probe command's answer, or the item that says why there is none."""
    host = transport.host
    try:
        return await transport.run(script, timeout=PROBE_TIMEOUT_S)
    except LoginShellRefused as exc:  # the account's shell: no probe ran, nothing is judged
        return item(host, "shell", False, exc.detail, exc.hint)
    except CorralError as exc:
        # A hung interpreter or disk: the probes as a whole fail, the host stays reachable.
        return item(host, "python", False, exc.message,
                    f"run the check again; if it persists, log in to {host.name} "
                    "and run its python by hand")


def shell_items(transport: Transport) -> list[CheckItem]:
    """A warning naming the banner the account's login shell printed before a command (once
    per host: the transport keeps the first), with the fix; none without one."""
    banner = getattr(transport, "banner", None)
    if not banner:
        return []
    return [item(transport.host, "shell", True, banner_warning(banner), BANNER_HINT)]


def _as_probed(host: HostSection, facts: HostFacts) -> HostSection:
    """``host`` naming the interpreter its probe ran, where cluster.toml names none: a fix
    then names that one, not "its venv if set up, else ..."."""
    if host.python is None and host.container is None and facts.executable:
        return replace(host, python=facts.executable)
    return host


async def _timed(after: AfterProbe, transport: Transport, facts: HostFacts) -> None:
    """``after`` (``corral check``'s push), its time kept as the host's ``push``."""
    began = time.monotonic()
    await after(transport, facts)
    facts.timings.append(CheckTiming(host=transport.host.name, name="push",
                                     seconds=time.monotonic() - began))


async def _probe_with_port_test(
    config: ClusterConfig, pool: HostPool, master_addr: str, user: UserCode | None,
    code_digest: str | None, after: AfterProbe | None,
) -> tuple[dict[str, HostFacts | BaseException], list[CheckItem], int | None]:
    """Every host's probes, and the rendezvous-port test run alongside them: the listener on
    the master, each worker's connect inside its probe command (no round trip of its own).
    For ``"auto"`` a random port is tried first; if it is taken, a second round lets the
    master pick any free port. The port items count only for hosts whose probes show a
    working interpreter (the others already fail for that reason)."""
    master = config.master_host
    setting = config.cluster.rendezvous_port
    target = auto_candidate() if setting == "auto" else int(setting)
    workers = [h for h in config.hosts if h.name != master.name]
    listener = PortListener(config, pool, target, len(workers))
    opening = asyncio.ensure_future(listener.open())
    try:
        results = await pool.gather(
            lambda t: probe_host(t, config, master_addr, user, target, code_digest, after))
        master_facts = results.get(master.name)
        # The master's listener runs through its engine: one that hung is not waited for.
        down = isinstance(master_facts, HostFacts) and master_facts.engine_down
        opened = None if down else await opening
    finally:
        if not opening.done():
            opening.cancel()
            await asyncio.wait({opening})
        await listener.close()
    if not isinstance(opened, int):
        if listener.taken and setting == "auto":
            items, port = await check_rendezvous_port(config, pool, master_addr)
            return results, items, port
        return results, opened or [], None
    items = [held_item(config, opened)]
    for host in workers:
        facts = results.get(host.name)
        if isinstance(facts, HostFacts) and facts.connect is not None:
            items.append(connect_item(host, master, master_addr, opened, facts.connect))
    return results, items, opened


def unreachable_item(host: HostSection, error: BaseException) -> CheckItem:
    """The failed ``reachable`` item of a host corral could not log in to, with the fix."""
    if isinstance(error, HostKeyNotTrusted):
        hint = f"if the fingerprint is right: corral trust {host.name}"
    else:
        hint = (f"check the address/port/user of {host.name!r} in cluster.toml "
                f"(`ssh {host.address}` must work without a password prompt)")
    return item(host, "reachable", False, str(error) or type(error).__name__, hint)


async def check_cluster(config: ClusterConfig, pool: HostPool) -> CheckReport:
    """Every pre-flight check of ``config``'s hosts, run in parallel over ``pool``."""
    return (await check_and_plan(config, pool, user=user_code(config.run, config.path.parent)))[0]


async def check_and_plan(
    config: ClusterConfig, pool: HostPool, *, user: UserCode | None,
    code_digest: str | None = None, after_probe: AfterProbe | None = None,
) -> tuple[CheckReport, LaunchFacts]:
    """``check_cluster``, and what the probes found that a launch needs (so that the launch
    does not ask the hosts again): GPU counts, interfaces, the tested rendezvous port.

    With ``code_digest`` each probe also asks whether that code tree is present; each host's
    ``after_probe(transport, facts)`` runs as soon as its probe is done (``corral check``'s
    push, while the other hosts are still being checked). ``user`` is the run's user code
    (``user_code``), located once by the caller for the whole check.
    """
    master_addr = master_address(config)
    results, rendezvous, port = await _probe_with_port_test(config, pool, master_addr, user,
                                                            code_digest, after_probe)
    items: list[CheckItem] = [run_root.local_item(config.cluster.run_root),
                              *tracker_items(config), *script_keys_items(config),
                              *left_out_items(config, user),
                              *group_timeout_items(config, user)]
    facts: dict[str, HostFacts] = {}
    for host in config.hosts:
        result = results.get(host.name)
        if isinstance(result, HostFacts):
            facts[host.name] = result
            items.extend(result.items)
        else:
            error = result if result is not None else RuntimeError("no result")
            items.append(unreachable_item(host, error))
    timings = [timing for host_facts in facts.values() for timing in host_facts.timings]
    membership_port, links = await _cluster_wide(config, pool, facts, master_addr,
                                                 (rendezvous, port), items, timings, user)
    same_torch = torch_item(facts)
    if same_torch is not None:
        items.append(same_torch)
    cpu = {name: f.cpu for name, f in facts.items() if f.cpu is not None}
    gpus = {name: f.gpus for name, f in facts.items()}
    nprocs = {h.name: nproc_for(h, gpus.get(h.name)) for h in config.hosts}
    items.extend(cpu_placement.check_items(config, cpu, nprocs, gpus))
    probes = {name: f.estimate for name, f in facts.items()}
    items.extend(memory_items(config, nprocs, gpus, {n: f.memory for n, f in facts.items()},
                              cluster_speeds(config, nprocs, probes, {}, links)[1]))
    # Stable: each host's items keep their order, the cluster-wide ones ("*") come last.
    order = {h.name: i for i, h in enumerate(config.hosts)}
    items.sort(key=lambda it: order.get(it.host, len(order)))
    found = LaunchFacts(gpus=gpus, interfaces={name: f.interface for name, f in facts.items()},
                        port=port, membership_port=membership_port, cpu=cpu,
                        bf16={name: tuple(f.bf16) for name, f in facts.items() if f.bf16},
                        links=links,
                        code_present={name: f.code_present for name, f in facts.items()},
                        leftovers={name: f.leftover_runs for name, f in facts.items()
                                   if f.leftover_runs},
                        torch={name: f.torch for name, f in facts.items()},
                        addresses={name: f.address for name, f in facts.items()})
    estimate = cluster_estimate(config, nprocs, probes, found.interfaces, links)
    modes = cluster_modes(config, nprocs, probes, found.interfaces, links)
    return CheckReport(items=tuple(items), estimate=estimate, links=links, modes=modes,
                       timings=tuple(timings)), found


async def _cluster_wide(
    config: ClusterConfig, pool: HostPool, facts: dict[str, HostFacts], master_addr: str,
    tested: tuple[list[CheckItem], int | None], items: list[CheckItem],
    timings: list[CheckTiming], user: UserCode | None,
) -> tuple[int | None, tuple[PairLink, ...]]:
    """The check's parts over the whole cluster, once every probe is in: the rendezvous port's
    items (``tested``: with the port found) and the membership port's, for the hosts whose
    Python works, and the full mesh; their items added to ``items``, their times to
    ``timings`` (``user``: the script, located once). The membership port (None: not wanted
    or not found) and the links measured."""
    rendezvous, port = tested
    testable = {name for name, host_facts in facts.items() if host_facts.python_ok}
    membership_port = None
    if config.master_name in testable:
        items.extend(item for item in rendezvous if item.host in testable)
        if port is not None and wants_membership_port(config, user):
            began = time.monotonic()
            membership, membership_port = await check_membership_port(config, pool,
                                                                      master_addr, port)
            timings.append(_cluster_timing("membership port", began))
            items.extend(item for item in membership if item.host in testable)
    began = time.monotonic()
    mesh, measured = await mesh_check(config, pool, facts, master_addr)
    timings.append(_cluster_timing("mesh", began))
    items.extend(mesh)
    return membership_port, measured.links if measured is not None else ()


def _cluster_timing(name: str, began: float) -> CheckTiming:
    """A cluster-wide part of the check, from ``began`` (``time.monotonic()``) to now."""
    return CheckTiming(host="*", name=name, seconds=time.monotonic() - began)
