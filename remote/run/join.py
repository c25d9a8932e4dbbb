"""``corral join HOST``: bring a host of cluster.toml into a running run, live.

The design: ``corral join`` does the host's work itself (the refusals, the pre-flight, the
push, the launch) and then writes a *join record* in the run's local directory
(``joins/<host>.json``, written whole: temp and rename). The process that follows the run
(``corral run``, the console, ``corral attach``) reads new join records as it follows
(``remote/run/follower.py``), and its loop decides what one means (``decide_members.py``:
the host counted in the run, ``joining``, its tail opened). This keeps every tail in the one
merged stream, and it needs no channel between two corral processes besides a file both
already own. A run followed by nobody (``--detach``) has no follower to count the joiner in:
the command writes that change itself, through the record's one writer (``RunRecord``,
``record_unfollowed``), and the record is taken up when the run is attached.

The joiner's ranks run under a torchrun of their own on the host (``--standalone``, not the
run's rendezvous: its agents would restart their workers for a new node) with
``CORRAL_JOIN``, the run's membership port and the master's address; they announce themselves
in rank 0's membership store and are admitted at a step boundary (``trainer/membership/``).
Rank 0 says whether it took them (a ``membership`` event ``joined`` or ``refused``); a joiner
refused or failing on its own ends its launcher, which the follower takes for a failed join,
not a failure of the run.

What cannot join is refused before anything is touched: a host not in cluster.toml, one in the
run already, an ended run, a run without live membership. Then what a launch checks for the
host (``join_check.py``: the joiner probed, its links with the run's hosts tested, the run's
hosts taken as their launch check recorded them; ``check_and_plan`` of every host for a record
of an older corral; then its torch, backend and precision against that record,
``join_match.py``), its code and data, and its launcher: any failure names why and leaves
nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from profiles.user_errors import CorralError
from remote.checks.plan import HostPlan, PlanError, plan_cluster
from remote.checks.preflight import check_and_plan
from remote.checks.task_import import push_and_check_code
from remote.config.cluster import ClusterConfig
from remote.config.task_code import UserCode, user_code
from remote.events import CheckItem
from remote.hosts.pool import HostPool
from remote.hosts.push import CodeBundle, build_bundle
from remote.records.runs import RunInfo, local_run_dir, run_dir_for, unfollowed
from remote.run.data_push import sync_run_data
from remote.run.join_check import check_joiner
from remote.run.join_match import joined_checked, joiner_mismatch
from remote.run.launch import LaunchPlan, launch_host
from remote.run.lifecycle import LaunchFailed
from remote.run.membership import (
    MembershipRefused,
    no_live_membership,
    record_unfollowed,
    shared_refusal,
)
from remote.run.record import RunRecord
from remote.run.stop import stop_run
from trainer.run_layout import IN_RUN_DIR, RunLayout

JOINS_DIR = "joins"
"""In the run's local directory: one join record per host ``corral join`` launched."""
JOIN_STOP_GRACE_S = 5.0
"""A join that failed after its launcher started: the grace before its processes are KILLed."""


@dataclass(frozen=True)
class JoinRecord:
    """What ``corral join`` leaves for the run's follower: a joiner's launcher is started."""

    host: str
    """The host (cluster.toml's name)."""
    pgid: int
    """Its launcher's process group (what a stop of the run ends there)."""
    asked: float
    """When ``corral join`` was asked (wall clock): the figures' start."""


def join_refusal(config: ClusterConfig, info: RunInfo, host: str) -> str | None:
    """Why ``host`` cannot join the run ``info`` (None: it can)."""
    run = info.label
    why = shared_refusal(config, info, host, "`corral run --resume` with the host instead")
    if why is not None:
        return why
    if host in info.hosts:
        return f"{host} is in run {run} already (its hosts: {', '.join(info.hosts)})"
    if not info.membership_port:
        return no_live_membership(run, "with the host")
    return None


def join_config(config: ClusterConfig, info: RunInfo, host: str) -> ClusterConfig:
    """The cluster the join is checked against: the run's hosts now and the joiner, in
    cluster.toml's order (so the mesh is probed with the hosts it will train with)."""
    wanted = {*info.hosts, host}
    return replace(config, hosts=tuple(h for h in config.hosts if h.name in wanted),
                   run=replace(config.run, split=None))


def joiner_alone(config: ClusterConfig, host: str) -> ClusterConfig:
    """The cluster the joiner is pushed to and launched in: the host alone, its own master
    (its torchrun is a world of its own; the run's master is named to its ranks apart)."""
    return replace(config, cluster=replace(config.cluster, master=host),
                   hosts=tuple(h for h in config.hosts if h.name == host),
                   run=replace(config.run, split=None))


def record_path(local_dir: Path, host: str) -> Path:
    """Where ``host``'s join record is, in the run's local directory."""
    return local_dir / JOINS_DIR / f"{host}.json"


def write_join_record(local_dir: Path, record: JoinRecord) -> Path:
    """Write ``record`` whole (a temp file, then renamed): a follower never reads half."""
    path = record_path(local_dir, record.host)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps({"host": record.host, "pgid": record.pgid,
                                "asked": record.asked}), encoding="utf-8")
    os.replace(temp, path)
    return path


def read_join_records(local_dir: Path) -> list[JoinRecord]:
    """Every join record of the run (a damaged one is skipped: it names no launcher)."""
    found = []
    for path in sorted((local_dir / JOINS_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            found.append(JoinRecord(host=str(data["host"]), pgid=int(data["pgid"]),
                                    asked=float(data["asked"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


@dataclass(frozen=True)
class JoinFigures:
    """What one join cost, from ``corral join`` on (``bench/membership.py``'s figures)."""

    launched_s: float
    """To the joiner's launcher started (the check, the push, the launch)."""
    first_step_s: float
    """To rank 0's ``membership`` event that let it in: the new generation's first step."""
    seconds_to_step: float | None
    """The event's own figure: from the joiner's announcement to that step."""
    state_bytes: int
    """Training state sent to the joiner."""
    phases: dict[str, float]
    """The event's seconds by phase: ``check``, ``push``, ``start``, ``admission``."""


async def join_and_time(config: ClusterConfig, info: RunInfo, host: str, *,
                        timeout_s: float = 600.0) -> JoinFigures:
    """``request_join``, then wait for rank 0's event that let ``host`` in, read from the
    run's local copy (a follower of the run keeps it: ``corral run``, the console)."""
    record = await request_join(config, info, host)
    launched_s = time.time() - record.asked  # request_join returns once the launcher runs
    copy = RunLayout(str(local_run_dir(config, info.run_id))).collected(config.master_name)
    events = Path(copy) / IN_RUN_DIR.events(0)  # rank 0's, as this machine's copy has them
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in await asyncio.to_thread(_lines, events):
            if (line.get("event"), line.get("change")) == ("membership", "joined") \
                    and host in line.get("hosts", ()):
                return JoinFigures(launched_s=launched_s,
                                   first_step_s=float(line["t"]) - record.asked,
                                   seconds_to_step=line.get("seconds_to_step"),
                                   state_bytes=int(line.get("state_bytes", 0)),
                                   phases=dict(line.get("phases") or {}))
        await asyncio.sleep(0.5)  # polling the copy a follower writes, with a deadline
    raise MembershipRefused(f"{host} was not let into run {info.label} within {timeout_s:.0f} s")


def _lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return found


def forget_join_record(local_dir: Path, host: str) -> None:
    """The join was taken in (or failed): its record goes, so a later join may come."""
    record_path(local_dir, host).unlink(missing_ok=True)


def _failed_items(items: tuple[CheckItem, ...], host: str, run_id: str) -> list[CheckItem]:
    """The check's failures that refuse the join: the joiner's own, the cluster-wide ones
    (torch across hosts) and the mesh's (a pair with the joiner); the running hosts' own
    items are no concern of the join (their leftovers are the run itself), nor the run's own
    processes seen on the joiner (a host that shares a machine with one of the run's)."""
    return [i for i in items if not i.ok and (i.host in (host, "*") or i.name == "mesh")
            and not (i.name == "leftovers" and i.detail.endswith(f" {run_id}"))]


@dataclass(frozen=True)
class JoinChecked:
    """What the join's check decided for the joiner."""

    code: CodeBundle
    place: HostPlan
    """Its ranks' place, numbered in a world of their own (``first_rank`` 0)."""
    backend: str
    user: UserCode | None
    present: dict[str, bool | None]
    """Per host, whether the code is there already."""
    recorded: dict[str, object] | None
    """The run's launch check record with the joiner added (``joined_checked``)."""


async def _check(config: ClusterConfig, info: RunInfo, host: str) -> JoinChecked:
    """The pre-flight for ``host`` with the run's hosts, or ``MembershipRefused`` naming
    what failed."""
    checked = join_config(config, info, host)
    try:
        user = user_code(checked.run, checked.path.parent)
        code = await asyncio.to_thread(build_bundle,
                                       user_folder=user.folder if user is not None else None,
                                       with_data=checked.run.script is None)
    except CorralError as exc:
        raise MembershipRefused(f"{host} cannot join: {exc.message}") from None
    if info.code_digest and code.digest != info.code_digest:
        raise MembershipRefused(
            f"the code changed since run {info.label} was launched (code {code.digest[:12]}, "
            f"the run's {info.code_digest[:12]}): a joiner must run the run's code")
    pool = HostPool(checked)
    try:  # the run's hosts as its launch check found them; an older record: all probed again
        report, facts = (await check_joiner(checked, pool, info, host, user=user,
                                            code_digest=code.digest)
                         or await check_and_plan(checked, pool, user=user,
                                                 code_digest=code.digest))
    finally:
        await pool.aclose()
    if failed := _failed_items(report.items, host, info.run_id):
        said = "; ".join(f"{i.host}: {i.name}: {i.detail}" + (f" ({i.hint})" if i.hint else "")
                         for i in failed)
        raise MembershipRefused(f"{host} failed the pre-flight check: {said}")
    try:
        planned = plan_cluster(checked, facts, info.master_addr)
    except PlanError as exc:
        raise MembershipRefused(f"{host} cannot join: {exc}") from None
    # its ranks are numbered in a world of their own until rank 0 gives them member ids
    place = replace(next(p for p in planned.hosts if p.host.name == host), first_rank=0)
    if (why := joiner_mismatch(info.checked, host, facts.torch.get(host), place,
                               planned.backend)) is not None:
        raise MembershipRefused(f"{host} cannot join: {why}")
    return JoinChecked(code=code, place=place, backend=planned.backend, user=user,
                       present=dict(facts.code_present),
                       recorded=joined_checked(info.checked, host, place, planned.backend,
                                               facts))


async def _push(config: ClusterConfig, pool: HostPool, run_dir: str, code: CodeBundle,
                present: bool | None, user: UserCode | None) -> None:
    """The code and the run's data to the joiner (``pool`` holds it alone)."""
    transport = await pool.get(config.hosts[0].name)
    pushed, items = await push_and_check_code(transport, config, code, present, user)
    if isinstance(pushed, CorralError):
        raise MembershipRefused(f"push to {transport.host.name} failed: {pushed}")
    if failed := [i for i in items if not i.ok]:
        raise MembershipRefused("; ".join(f"{i.host}: {i.name}: {i.detail}" for i in failed))
    try:
        async for _ in sync_run_data(pool, config, run_dir, user):
            pass  # the data sync's progress lines: the join says its outcome only
    except LaunchFailed as exc:
        raise MembershipRefused(f"data sync to {transport.host.name} failed: {exc}") from None


def joiner_plan(info: RunInfo, run_dir: str, code: CodeBundle, backend: str,
                user: UserCode | None, phases: dict[str, float] | None = None) -> LaunchPlan:
    """The launch of a joiner: a world of its own (one node), the run's membership port and
    the master's address (where the store is), ``CORRAL_JOIN``, and the join's ``phases`` so
    far (seconds by name: its ranks announce them, the ``joined`` event carries them)."""
    return LaunchPlan(run_id=info.run_id, run_dir=run_dir, code_digest=code.digest,
                      master_addr=info.master_addr, port=0, nnodes=1, user=user,
                      backend=backend, membership_port=info.membership_port,
                      join_generation=0, join_phases=json.dumps(phases or {}))


async def request_join(config: ClusterConfig, info: RunInfo, host: str) -> JoinRecord:
    """Check, push and launch ``host`` for the running run ``info``, then leave the join
    record for its follower. ``MembershipRefused`` when the join cannot be made (nothing of
    it is left running)."""
    asked = time.time()
    if (why := join_refusal(config, info, host)) is not None:
        raise MembershipRefused(why)
    checked = await _check(config, info, host)
    code, user = checked.code, checked.user
    phases = {"check": round(time.time() - asked, 3)}
    alone = joiner_alone(config, host)
    run_dir = run_dir_for(config, info.run_id)
    joiner_pool = HostPool(alone)
    try:
        pushing = time.monotonic()
        await _push(alone, joiner_pool, run_dir, code, checked.present.get(host), user)
        phases["push"] = round(time.monotonic() - pushing, 3)
        plan = joiner_plan(info, run_dir, code, checked.backend, user, phases)
        try:
            pgid = await launch_host(await joiner_pool.get(host), alone, plan, checked.place)
        except CorralError as exc:  # it may have started: nothing of it is left
            await stop_run(joiner_pool, run_dir, info.run_id, grace_s=JOIN_STOP_GRACE_S,
                           hosts=[host])
            raise MembershipRefused(f"launch on {host} failed: {exc}") from None
    finally:
        await joiner_pool.aclose()
    if checked.recorded is not None:  # before the join record: a follower writes after it
        with contextlib.suppress(CorralError, OSError):  # unwritten: the next join checks all
            RunRecord(config, info).change(checked=checked.recorded)
    record = JoinRecord(host=host, pgid=pgid, asked=asked)
    write_join_record(local_run_dir(config, info.run_id), record)
    if unfollowed(info):  # counted in the run now, as a follower counts a launched joiner
        record_unfollowed(config, info, hosts=(*info.hosts, host),
                          left=set(info.left_hosts) - {host})
    return record
