"""The first phases of ``corral run``: check (``run_check``), push (``push_code_to_hosts``),
launch (``start_hosts``: the launch plan, then every host's launcher).

The run's lifecycle loop (``SshRunHandle.events``) moves through them and announces each
(``remote/run/lifecycle.py``); each phase here does the work and yields its ``HostStatus`` and
``LogLine`` events. A failed phase raises ``LaunchFailed`` (a failed check carries its whole
report; a launch that may have started hosts says so, and the loop stops them: a failed launch
leaves nothing running).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from profiles.user_errors import CorralError
from remote.checks.plan import HostPlan, LaunchFacts, PlanError, master_address, plan_cluster
from remote.checks.preflight import check_and_plan
from remote.checks.script_imports import DATA_CHECK, LEFT_OUT_CHECK, SCRIPT_KEYS_CHECK
from remote.checks.task_import import push_and_check_code
from remote.config.cluster import ClusterConfig, HostSection
from remote.config.task_code import UserCode, user_code
from remote.events import (
    CheckItem,
    CheckReport,
    CheckTiming,
    HostState,
    HostStatus,
    LogLine,
    RunEvent,
)
from remote.hosts.pool import HostPool
from remote.hosts.push import CodeBundle, build_bundle
from remote.hosts.transport import Transport
from remote.records.collected import CollectedCopy
from remote.records.runs import RunInfo, local_run_dir, run_dir_for
from remote.run.data_push import sync_run_data
from remote.run.decide_members import host_loss_line
from remote.run.join_match import launch_checked
from remote.run.launch import LaunchPlan, launch_host
from remote.run.leftovers import end_finished_leftovers
from remote.run.lifecycle import LaunchFailed
from remote.run.replicate import replicate_master_files
from remote.run.stream import catch_up, remote_sizes


class _HostLaunchFailed(Exception):
    def __init__(self, host: str, error: CorralError) -> None:
        super().__init__(host)
        self.host = host
        self.error = error


def _errors(results: Mapping[str, object]) -> dict[str, BaseException]:
    return {h: r for h, r in results.items() if isinstance(r, BaseException)}


def _describe(errors: dict[str, BaseException]) -> str:
    return "; ".join(f"{h}: {e}" for h, e in errors.items())


@dataclass
class Launch:
    """What the phases of one launch learn, in the order they learn it."""

    pool: HostPool
    config: ClusterConfig
    info: RunInfo
    master_addr: str = ""
    code: CodeBundle | None = None
    facts: LaunchFacts | None = None
    report: CheckReport | None = None
    """The pre-flight check's report (with the push's items once the code is in place)."""
    port: int = 0
    membership_port: int | None = None
    """The run's membership port (``LaunchFacts.membership_port``; None: a script run)."""
    places: dict[str, HostPlan] = field(default_factory=dict)
    backend: str = ""
    pgids: dict[str, int] = field(default_factory=dict)
    """Per host: the process group of its launcher, once started."""
    user: UserCode | None = None
    """The run's user code (``user_code``: its task or script and the folder pushed with it),
    located once, by the check, for every later phase; None for a built-in task."""

    @property
    def hosts(self) -> list[str]:
        return [h.name for h in self.config.hosts]

    @property
    def run_dir(self) -> str:
        return run_dir_for(self.config, self.info.run_id)

    def facts_recorded(self) -> dict[str, object]:
        """What the run's record keeps of a launch that started every host."""
        assert self.code is not None
        return {"master_addr": self.master_addr, "port": self.port, "pgids": dict(self.pgids),
                "membership_port": self.membership_port or 0,
                "code_digest": self.code.digest,
                "ranks": {name: list(place.ranks) for name, place in self.places.items()},
                "checked": launch_checked(self.facts.torch if self.facts else {}, self.places,
                                          self.backend, self.facts)}

    def each_host(self, state: HostState) -> list[HostStatus]:
        now = time.time()
        return [HostStatus(t=now, host=name, state=state) for name in self.hosts]


async def run_check(launch: Launch) -> AsyncGenerator[RunEvent, None]:
    """The pre-flight check (phase ``checking``).

    Every host is asked what the launch needs once: the check's probes also find each host's
    GPU count, interface and a free rendezvous port, and whether the code tree is there."""
    config = launch.config
    began = time.monotonic()
    for event in launch.each_host("checking"):
        yield event
    try:
        launch.master_addr = master_address(config)
    except CorralError as exc:
        raise LaunchFailed(f"cannot find the master's address: {exc}") from None
    try:
        user = launch.user = user_code(config.run, config.path.parent)
    except CorralError as exc:
        raise LaunchFailed(f"{config.path}: [run] task: {exc.message}") from None
    bundling = time.monotonic()
    try:
        code = launch.code = await asyncio.to_thread(
            build_bundle, user_folder=user.folder if user is not None else None,
            with_data=config.run.script is None)  # a script's data: the data sync
    except CorralError as exc:  # over the size budget: named before any host is touched
        raise LaunchFailed(exc.message) from None
    bundled = CheckTiming(host="*", name="code bundle", seconds=time.monotonic() - bundling)
    report, launch.facts = await check_and_plan(config, launch.pool, user=user,
                                                code_digest=code.digest)
    report = await end_finished_leftovers(config, launch.pool, report, launch.facts.leftovers)
    report = launch.report = replace(report, timings=(bundled, *report.timings))
    yield LogLine(t=time.time(), host="*", rank=None,
                  text=timing_line("check", time.monotonic() - began, report.timings))
    for item in report.items:  # a finished run's leftovers, ended: said
        if item.name == "leftovers" and item.detail.startswith("ended "):
            yield LogLine(t=time.time(), host=item.host, rank=None, text=f"corral: {item.detail}")
    _refuse_failed(report)
    for line in warning_lines(report.items):
        yield LogLine(t=time.time(), host="*", rank=None, text=line)


def timing_line(phase: str, seconds: float, timings: Sequence[CheckTiming]) -> str:
    """How long ``phase`` took and each of its parts, as the run logs it (where the time
    before a launch goes, issue 58)."""
    parts = [f"{t.host} {t.name} {t.seconds:.2f} s" + (f" ({t.how})" if t.how else "")
             for t in timings]
    return f"corral: {phase} took {seconds:.2f} s" + (": " + ", ".join(parts) if parts else "")


def warning_lines(items: Sequence[CheckItem]) -> list[str]:
    """The check's warnings as the run logs them (ignored keys, left out, the data that
    travels, optional imports): each once per run, however many hosts found it, with the hosts
    when more than one."""
    hosts: dict[str, list[str]] = {}
    for item in items:
        if (item.name in (SCRIPT_KEYS_CHECK, LEFT_OUT_CHECK, DATA_CHECK)
                or item.detail.startswith("warning:")):
            hosts.setdefault(item.detail, []).append(item.host)
    return [f"corral: {detail}" + (f" (on {', '.join(on)})" if len(on) > 1 else "")
            for detail, on in hosts.items()]


def _refuse_failed(report: CheckReport) -> None:
    if not report.ok:
        names = sorted({f"{i.host}:{i.name}" for i in report.failures()})
        raise LaunchFailed("pre-flight check failed: " + ", ".join(names), report=report)


async def push_code_to_hosts(launch: Launch) -> AsyncGenerator[RunEvent, None]:
    """The push (phase ``pushing``): the code tree to every host at once (content-addressed:
    a host that has it is sent nothing), then on each what needs the code there, judged as
    part of the check (the data files, a user task's import: ``push_and_check_code``)."""
    code, facts, report = launch.code, launch.facts, launch.report
    assert code is not None and facts is not None and report is not None
    for event in launch.each_host("pushing"):
        yield event
    began = time.monotonic()
    timings: list[CheckTiming] = []

    async def push_one(transport: Transport) -> tuple[bool | CorralError, list[CheckItem]]:
        started = time.monotonic()
        pushed = await push_and_check_code(transport, launch.config, code,
                                           facts.code_present.get(transport.host.name),
                                           launch.user)
        timings.append(CheckTiming(host=transport.host.name, name="push",
                                   seconds=time.monotonic() - started))
        return pushed

    results = await launch.pool.gather(push_one)
    pushed: dict[str, bool | BaseException] = {}
    code_items: list[CheckItem] = []
    for name in launch.hosts:
        result = results.get(name, CorralError(f"{name} was not reached"))
        if isinstance(result, BaseException):
            pushed[name] = result
        else:
            pushed[name], items = result
            code_items += items
    report = launch.report = replace(report, timings=(*report.timings, *timings))
    if errors := _errors(pushed):
        for name, error in errors.items():
            yield HostStatus(t=time.time(), host=name, state="failed", detail=str(error))
        raise LaunchFailed("push failed: " + _describe(errors))
    if code_items:  # the check's report, with the items that needed the code in place
        order = {name: i for i, name in enumerate(launch.hosts)}
        items = sorted((*report.items, *code_items), key=lambda it: order.get(it.host, len(order)))
        launch.report = replace(report, items=tuple(items))
        _refuse_failed(launch.report)
    sent = sorted(h for h, was_sent in pushed.items() if was_sent is True)
    where = (f"sent to {', '.join(sent)}" if sent
             else "already on every host, nothing sent")
    yield LogLine(t=time.time(), host="*", rank=None,
                  text=f"code {code.digest[:12]}: {where} ({code.files} files)")
    yield LogLine(t=time.time(), host="*", rank=None,
                  text=timing_line("push", time.monotonic() - began, timings))
    async for data_event in sync_run_data(launch.pool, launch.config, launch.run_dir,
                                          launch.user):
        yield data_event


def _plan(launch: Launch) -> None:
    """The rendezvous port and each host's part of the launch."""
    assert launch.facts is not None
    port_setting = launch.config.cluster.rendezvous_port
    port = launch.facts.port if port_setting == "auto" else int(port_setting)
    if port is None:
        raise LaunchFailed("cannot pick a rendezvous port on the master")
    launch.port = port
    launch.membership_port = launch.facts.membership_port
    try:
        cluster_plan = plan_cluster(launch.config, launch.facts, launch.master_addr)
    except PlanError as exc:
        raise LaunchFailed(f"{exc.title}: {exc}") from None
    launch.places = {p.host.name: p for p in cluster_plan.hosts}
    launch.backend = cluster_plan.backend


async def _follow_on(launch: Launch) -> None:
    """A resumed run's event files go on from where the previous launch left them: the local
    copy first gets the lines its follower never read (``catch_up``: what the ranks wrote as
    they were stopped), then its offsets move to the files' ends, so the follower reads new
    lines only."""
    sizes = await launch.pool.gather(lambda t: remote_sizes(t, launch.run_dir))
    local_dir = local_run_dir(launch.config, launch.info.run_id)
    for name, found in sizes.items():
        if isinstance(found, dict):
            copy = CollectedCopy(local_dir, name)
            await catch_up(await launch.pool.get(name), launch.run_dir, copy, found)
            copy.raise_offsets(found)
            copy.close()


async def start_hosts(launch: Launch, *, resume: bool, policy: str | None,
                      restart: int = 0) -> AsyncGenerator[RunEvent, None]:
    """Plan the launch (the rendezvous port, each host's part), then start every host's
    launcher; on a failure, ``LaunchFailed`` says that hosts may have started (the loop stops
    them)."""
    assert launch.code is not None
    _plan(launch)
    config, info, pool = launch.config, launch.info, launch.pool
    if resume:
        await _follow_on(launch)
    if config.run.script is not None and (resume or restart > 0):
        # the same working directories again: what only rank 0 saved reaches every host
        async for line in replicate_master_files(config, pool, info, launch.hosts):
            yield line
    plan = LaunchPlan(run_id=info.run_id, run_dir=launch.run_dir, code_digest=launch.code.digest,
                      master_addr=launch.master_addr, port=launch.port,
                      nnodes=len(launch.hosts), user=launch.user, resume=resume, policy=policy,
                      backend=launch.backend, restart=restart,
                      membership_port=launch.membership_port)
    for event in launch.each_host("starting"):
        yield event
    pgids = launch.pgids

    async def start_one(host: HostSection) -> None:
        try:
            transport: Transport = await pool.get(host.name)
            pgids[host.name] = await launch_host(transport, config, plan, launch.places[host.name])
        except CorralError as exc:
            raise _HostLaunchFailed(host.name, exc) from None

    # Every host at once: the ranks are numbered in host order whatever order torch gives
    # the nodes. Every launch runs to its end before a failure is handled: nothing starts
    # after the stop.
    outcomes = await asyncio.gather(*(start_one(h) for h in config.hosts),
                                    return_exceptions=True)
    for failed in outcomes:
        if not isinstance(failed, BaseException):
            continue
        if not isinstance(failed, _HostLaunchFailed):
            raise failed
        yield HostStatus(t=time.time(), host=failed.host, state="failed",
                         detail=str(failed.error))
        raise LaunchFailed(f"launch failed on {failed.host}: {failed.error}",
                           failed_host=failed.host, may_have_started=True)
    yield LogLine(t=time.time(), host="*", rank=None,
                  text=f"launched run {info.run_id}: rendezvous "
                  f"{launch.master_addr}:{launch.port}, "
                  + ", ".join(f"{h} pgid {p}" for h, p in pgids.items())
                  + f"; {host_loss_line(config, launch.membership_port)}")
