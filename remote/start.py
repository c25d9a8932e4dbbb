"""The first phases of ``corral run``: check, push, launch.

Each phase shows as ``RunStatus`` and ``HostStatus`` events. A failed phase ends the stream with
a ``failed`` ``RunStatus`` (a failed check carries its whole report) and leaves nothing running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace

from profiles.errors import CorralError
from remote.api import CheckReport, HostStatus, LogLine, RunEvent, RunStatus
from remote.config import ClusterConfig, HostSection
from remote.launch import (
    InterfaceSelector,
    LaunchPlan,
    host_interface,
    host_nproc,
    launch_host,
    master_address,
    node_address,
    pick_port,
    run_dir_for,
)
from remote.pool import HostPool
from remote.push import build_bundle, push_code
from remote.runs import RunInfo, local_run_dir, write_run_info
from remote.stop import stop_run
from remote.stream import CollectedCopy, remote_sizes
from remote.transport import Transport

StatusFactory = Callable[..., RunStatus]


def _interface_selector() -> InterfaceSelector | None:
    try:
        from remote.netif import select_interface
    except ImportError:
        return None
    return select_interface


async def _skip_check(config: ClusterConfig, pool: HostPool) -> CheckReport:
    return CheckReport(items=())


class _LaunchFailed(Exception):
    def __init__(self, host: str, error: CorralError) -> None:
        super().__init__(host)
        self.host = host
        self.error = error


async def _master_port(pool: HostPool, master: str) -> int | BaseException:
    try:
        return await pick_port(await pool.get(master))
    except CorralError as exc:
        return exc


async def _given(port: int) -> int:
    return port


def _errors(results: Mapping[str, object]) -> dict[str, BaseException]:
    return {h: r for h, r in results.items() if isinstance(r, BaseException)}


def _describe(errors: dict[str, BaseException]) -> str:
    return "; ".join(f"{h}: {e}" for h, e in errors.items())


async def launch_run(
    pool: HostPool, config: ClusterConfig, info: RunInfo, *, resume: bool,
    policy: str | None, status: StatusFactory, preflight: bool = True,
) -> AsyncIterator[RunEvent]:
    """Check, push and launch run ``info`` on every host, yielding progress events."""
    hosts = [h.name for h in config.hosts]
    run_dir = run_dir_for(config, info.run_id)

    # -- pre-flight check ---------------------------------------------------------------
    yield status("checking")
    for name in hosts:
        yield HostStatus(t=time.time(), host=name, state="checking")
    try:
        from remote.checks import check_cluster
    except ImportError:
        yield LogLine(t=time.time(), host="*", rank=None, text="pre-flight checks unavailable")
    else:
        if not preflight:
            check_cluster = _skip_check
        report = await check_cluster(config, pool)
        if not report.ok:
            names = sorted({f"{i.host}:{i.name}" for i in report.failures()})
            yield status("failed", "pre-flight check failed: " + ", ".join(names), report=report)
            return

    # -- push, and meanwhile size the hosts and prepare the rendezvous ----------------------
    yield status("pushing")
    bundle = await asyncio.to_thread(build_bundle)
    for name in hosts:
        yield HostStatus(t=time.time(), host=name, state="pushing")
    try:
        master_addr = master_address(config)
    except CorralError as exc:
        yield status("failed", f"cannot find the master's address: {exc}")
        return
    selector = _interface_selector()
    pushing = pool.gather(lambda t: push_code(t, bundle))
    sizing = pool.gather(host_nproc)
    routing = pool.gather(
        lambda t: host_interface(t, master_addr=master_addr,
                                 is_master=t.host.name == config.cluster.master,
                                 selector=selector))
    port_setting = config.cluster.rendezvous_port
    porting = (_master_port(pool, config.cluster.master) if port_setting == "auto"
               else _given(int(port_setting)))
    pushed, nprocs, interfaces, port = await asyncio.gather(pushing, sizing, routing, porting)
    if errors := _errors(pushed):
        for name, error in errors.items():
            yield HostStatus(t=time.time(), host=name, state="failed", detail=str(error))
        yield status("failed", "push failed: " + _describe(errors))
        return
    sent = sorted(h for h, was_sent in pushed.items() if was_sent is True)
    yield LogLine(t=time.time(), host="*", rank=None,
                  text=f"code {bundle.digest[:12]}: sent to {', '.join(sent) or 'no host'}"
                  f" ({bundle.files} files)")
    if isinstance(port, BaseException):
        yield status("failed", f"cannot pick a rendezvous port on the master: {port}")
        return
    if errors := _errors(nprocs):
        yield status("failed", "cannot size the hosts: " + _describe(errors))
        return

    # -- launch ---------------------------------------------------------------------------
    yield status("launching")
    if resume:
        # The event files go on from where the previous launch left them: follow new lines only.
        sizes = await pool.gather(lambda t: remote_sizes(t, run_dir))
        local_dir = local_run_dir(config, info.run_id)
        for name, found in sizes.items():
            if isinstance(found, dict):
                copy = CollectedCopy(local_dir, name)
                copy.raise_offsets(found)
                copy.close()
    plan = LaunchPlan(run_id=info.run_id, run_dir=run_dir, code_digest=bundle.digest,
                      master_addr=master_addr, port=port, nnodes=len(hosts), resume=resume,
                      policy=policy)
    # Where hosts share an address torch orders their nodes by launcher pid, so hosts that
    # share one are started one after the other, in host order (node ranks then follow it);
    # hosts with addresses of their own start in parallel.
    groups: dict[str | None, list[tuple[int, HostSection]]] = {}
    for node_rank, host in enumerate(config.hosts):
        address = node_address(config, host, master_addr)
        groups.setdefault(address, []).append((node_rank, host))
    for name in hosts:
        yield HostStatus(t=time.time(), host=name, state="starting")
    pgids: dict[str, int] = {}

    async def start_group(members: list[tuple[int, HostSection]], address: str | None) -> None:
        for node_rank, host in members:
            nproc, interface = nprocs[host.name], interfaces.get(host.name)
            assert isinstance(nproc, int)
            try:
                transport: Transport = await pool.get(host.name)
                pgids[host.name] = await launch_host(
                    transport, config, plan, node_rank=node_rank, nproc=nproc,
                    interface=interface if isinstance(interface, str) else None,
                    local_addr=address)
            except CorralError as exc:
                raise _LaunchFailed(host.name, exc) from None

    # Every group runs to its end before a failure is handled: nothing starts after the stop.
    outcomes = await asyncio.gather(*(start_group(m, a) for a, m in groups.items()),
                                    return_exceptions=True)
    for failed in outcomes:
        if not isinstance(failed, BaseException):
            continue
        if not isinstance(failed, _LaunchFailed):
            raise failed
        yield HostStatus(t=time.time(), host=failed.host, state="failed",
                         detail=str(failed.error))
        await stop_run(pool, run_dir, info.run_id, grace_s=2.0)
        yield status("failed", f"launch failed on {failed.host}: {failed.error}",
                     failed_host=failed.host)
        return
    write_run_info(config, replace(info, state="running", master_addr=master_addr, port=port,
                                   pgids=pgids, code_digest=bundle.digest))
    yield LogLine(t=time.time(), host="*", rank=None,
                  text=f"launched run {info.run_id}: rendezvous {master_addr}:{port}, "
                  + ", ".join(f"{h} pgid {p}" for h, p in pgids.items()))

