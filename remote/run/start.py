"""The first phases of ``corral run``: check, push, launch.

Each phase shows as ``RunStatus`` and ``HostStatus`` events. A failed phase ends the stream with
a ``failed`` ``RunStatus`` (a failed check carries its whole report) and leaves nothing running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace

from profiles.user_errors import CorralError
from remote.api import CheckReport, HostStatus, LogLine, RunEvent, RunStatus
from remote.checks.preflight import HostFacts, check_and_plan
from remote.config.cluster import ClusterConfig, HostSection
from remote.hosts.pool import HostPool
from remote.hosts.transport import Transport
from remote.records.runs import RunInfo, local_run_dir, write_run_info
from remote.run.launch import (
    LaunchPlan,
    launch_host,
    master_address,
    probe_launch_facts,
    run_dir_for,
)
from remote.run.plan import PlanError, plan_cluster
from remote.run.push import build_bundle, push_code
from remote.run.stop import stop_run
from remote.run.stream import CollectedCopy, remote_sizes
from remote.run.task_code import user_code

StatusFactory = Callable[..., RunStatus]


class _LaunchFailed(Exception):
    def __init__(self, host: str, error: CorralError) -> None:
        super().__init__(host)
        self.host = host
        self.error = error


def _errors(results: Mapping[str, object]) -> dict[str, BaseException]:
    return {h: r for h, r in results.items() if isinstance(r, BaseException)}


def _describe(errors: dict[str, BaseException]) -> str:
    return "; ".join(f"{h}: {e}" for h, e in errors.items())


async def launch_run(
    pool: HostPool, config: ClusterConfig, info: RunInfo, *, resume: bool,
    policy: str | None, status: StatusFactory, preflight: bool = True,
) -> AsyncIterator[RunEvent]:
    """Check, push and launch run ``info`` on every host, yielding progress events.

    Every host is asked what the launch needs once: the pre-flight check's probes also find
    each host's GPU count, interface and a free rendezvous port (without the check, one
    command per host asks just that). The probes also tell whether the code tree is there, and
    each host's push starts as soon as its probe is done, alongside the rest of the check.
    """
    hosts = [h.name for h in config.hosts]
    run_dir = run_dir_for(config, info.run_id)

    # -- pre-flight check, and within it the push -------------------------------------------
    yield status("checking")
    for name in hosts:
        yield HostStatus(t=time.time(), host=name, state="checking")
    try:
        master_addr = master_address(config)
    except CorralError as exc:
        yield status("failed", f"cannot find the master's address: {exc}")
        return
    try:
        user = user_code(config.run, config.path.parent)
    except CorralError as exc:
        yield status("failed", f"{config.path}: [run] task: {exc.message}")
        return
    code = await asyncio.to_thread(
        build_bundle, user_folder=user.folder if user is not None else None)
    pushed: dict[str, bool | BaseException] = {}

    async def push_after_probe(transport: Transport, found: HostFacts) -> None:
        # A push before the whole check has passed is harmless: the tree is content-addressed
        # and renamed into place only when complete.
        try:
            pushed[transport.host.name] = await push_code(transport, code,
                                                          present=found.code_present)
        except CorralError as exc:
            pushed[transport.host.name] = exc

    if preflight:
        report, facts = await check_and_plan(config, pool, code_digest=code.digest,
                                             after_probe=push_after_probe)
    else:
        pushing = asyncio.ensure_future(pool.gather(lambda t: push_code(t, code)))
        try:
            report, facts = CheckReport(items=()), await probe_launch_facts(pool, config,
                                                                             master_addr)
        finally:
            pushed.update(await pushing)
    if not report.ok:
        names = sorted({f"{i.host}:{i.name}" for i in report.failures()})
        yield status("failed", "pre-flight check failed: " + ", ".join(names), report=report)
        return

    # -- push (done by now: it ran within the check) ----------------------------------------
    yield status("pushing")
    for name in hosts:
        yield HostStatus(t=time.time(), host=name, state="pushing")
    for name in hosts:
        pushed.setdefault(name, CorralError(f"{name} was not probed"))
    if errors := _errors(pushed):
        for name, error in errors.items():
            yield HostStatus(t=time.time(), host=name, state="failed", detail=str(error))
        yield status("failed", "push failed: " + _describe(errors))
        return
    sent = sorted(h for h, was_sent in pushed.items() if was_sent is True)
    yield LogLine(t=time.time(), host="*", rank=None,
                  text=f"code {code.digest[:12]}: sent to {', '.join(sent) or 'no host'}"
                  f" ({code.files} files)")
    port_setting = config.cluster.rendezvous_port
    port = facts.port if port_setting == "auto" else int(port_setting)
    if port is None:
        yield status("failed", "cannot pick a rendezvous port on the master")
        return
    try:
        cluster_plan = plan_cluster(config, facts, master_addr)
    except PlanError as exc:
        yield status("failed", f"{exc.title}: {exc}")
        return
    places = {p.host.name: p for p in cluster_plan.hosts}

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
    plan = LaunchPlan(run_id=info.run_id, run_dir=run_dir, code_digest=code.digest,
                      master_addr=master_addr, port=port, nnodes=len(hosts), resume=resume,
                      policy=policy, backend=cluster_plan.backend)
    for name in hosts:
        yield HostStatus(t=time.time(), host=name, state="starting")
    pgids: dict[str, int] = {}

    async def start_one(host: HostSection) -> None:
        try:
            transport: Transport = await pool.get(host.name)
            pgids[host.name] = await launch_host(transport, config, plan, places[host.name])
        except CorralError as exc:
            raise _LaunchFailed(host.name, exc) from None

    # Every host at once: the ranks are numbered in host order whatever order torch gives
    # the nodes. Every launch runs to its end before a failure is handled: nothing starts
    # after the stop.
    outcomes = await asyncio.gather(*(start_one(h) for h in config.hosts),
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
                                   pgids=pgids, code_digest=code.digest))
    yield LogLine(t=time.time(), host="*", rank=None,
                  text=f"launched run {info.run_id}: rendezvous {master_addr}:{port}, "
                  + ", ".join(f"{h} pgid {p}" for h, p in pgids.items()))
