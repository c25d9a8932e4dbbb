"""The face of remote/ for its front ends: with ``figures`` (every figure of a run), the
one module of remote that console/ imports.

It re-exports what a front end reads (a run's stream and reports, recorded runs, cluster.toml
and whether it has live membership) and thin entry points to what reaches the hosts, each
importing its layer when called (reading records never loads SSH). Nothing here formats text;
an import-linter contract keeps console/ on these two faces, and remote's layers below."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from profiles.user_errors import UsageError
from remote.config.cluster import ClusterConfig
from remote.config.init import demo_toml, hosts_toml, script_toml, write_new
from remote.config.live_membership import wants_membership_port
from remote.config.read import load_cluster
from remote.config.task_code import script_argument
from remote.events import (
    FINAL_RUN_STATES,
    TRAINED_NOTHING,
    CheckItem,
    CheckReport,
    HostState,
    HostStatus,
    LaunchPreview,
    LogLine,
    PlannedHost,
    RankEvent,
    RunController,
    RunEvent,
    RunHandle,
    RunState,
    RunStatus,
    StopReport,
    trained_nothing,
)
from remote.k8s.formats import K8S_FORMATS, K8sFormat
from remote.records.culprit import collateral_sources, culprit_line
from remote.records.history import RunHistory, load_history
from remote.records.log_search import (
    RunLogLine,
    compile_search,
    run_log_lines,
    search_lines,
)
from remote.records.runs import (
    RunInfo,
    bad_records,
    find_runs,
    list_runs,
    local_run_dir,
    read_run_info,
    resolve_run_id,
)
from remote.records.summary import (
    SCHEMA_VERSION,
    Outcome,
    RunSummary,
    summarize,
    summary_to_json,
)
from remote.records.tensorboard import board_command, board_label, convert_run
from remote.records.tracking import TrackerConversion, convert_tracker
from remote.run.script_record import resume_offer, with_recorded_script
from remote.terminal_text import bar_key, plain, ranks_label
from trainer.balance.estimate import HostVerdict
from trainer.balance.links import PairLink, pair_throughput

if TYPE_CHECKING:  # the results of the entry points below, whose layers load when called
    from remote.hosts.profile_hosts import HostProfile as HostProfile
    from remote.hosts.setup import SetupResult as SetupResult
    from remote.k8s.export import K8sExport as K8sExport
    from remote.run.fetch import Fetched as Fetched
    from remote.run.join import JoinFigures as JoinFigures

__all__ = [
    "FINAL_RUN_STATES",
    "K8S_FORMATS",
    "SCHEMA_VERSION",
    "TRAINED_NOTHING",
    "CheckItem",
    "CheckReport",
    "ClusterConfig",
    "HostState",
    "HostStatus",
    "HostVerdict",
    "K8sFormat",
    "LaunchPreview",
    "LogLine",
    "Outcome",
    "PairLink",
    "PlannedHost",
    "RankEvent",
    "RunController",
    "RunEvent",
    "RunHandle",
    "RunHistory",
    "RunInfo",
    "RunLogLine",
    "RunState",
    "RunStatus",
    "RunSummary",
    "StopReport",
    "TrackerConversion",
    "bad_records",
    "bar_key",
    "board_command",
    "board_label",
    "collateral_sources",
    "compile_search",
    "convert_run",
    "convert_tracker",
    "culprit_line",
    "demo_toml",
    "export_kubernetes",
    "fetch_outputs",
    "fetch_results",
    "find_runs",
    "follow_log_command",
    "hosts_toml",
    "is_script_run",
    "kubernetes_next_steps",
    "list_runs",
    "load_cluster",
    "load_history",
    "local_run_dir",
    "open_controller",
    "pair_throughput",
    "plain",
    "profile_cluster",
    "ranks_label",
    "refresh_runs",
    "refresh_unfollowed",
    "resume_offer",
    "run_log_lines",
    "script_argument",
    "script_toml",
    "search_lines",
    "setup_cluster",
    "stop_wait",
    "summarize",
    "summary_to_json",
    "trained_nothing",
    "trust_host",
    "wants_membership_port",
    "with_recorded_script",
    "with_script",
    "write_kubernetes",
    "write_new",
]


def open_controller(path: str | os.PathLike[str] | ClusterConfig) -> RunController:
    """The SSH ``RunController`` for the cluster.toml at ``path`` or a read config (CorralError)."""
    from remote.run.controller import SshRunController
    from remote.run.controller import open_controller as open_ssh_controller

    if isinstance(path, ClusterConfig):
        return SshRunController(path)
    return open_ssh_controller(path)


def follow_log_command(config: ClusterConfig, run_id: str, host: str) -> str:
    """The shell command that follows ``host``'s launcher log of run ``run_id`` (``ssh HOST
    'tail -F FILE'``; ``UsageError`` for a host not in ``config``)."""
    from remote.hosts.log_follow import follow_log_command as command

    return command(config, run_id, host)


def with_script(config: ClusterConfig, script: Path, args: Sequence[str],
                code: Path | None = None) -> ClusterConfig:
    """``config`` running ``script`` (a path from the working directory) with ``args``, as
    ``[run] script`` and ``args`` would (checked alike: ``ConfigError`` naming the problem).
    The ranks run it from the working directory, as torchrun would. The code folder that
    travels is ``code`` when given (the repository's root of a script launched from a folder
    inside it, which reaches ``..``), else the working directory when it holds the script, else
    the script's folder."""
    path = script_argument(script)
    here = Path.cwd().resolve()
    folder = code.expanduser().resolve() if code is not None else None
    if folder is not None and not folder.is_dir():
        raise UsageError(f"--code {code}: no such folder", title="bad options")
    if folder is not None and not path.resolve().is_relative_to(folder):
        raise UsageError(f"--code {code}: the script {script} is not inside it; name the "
                         "repository folder that holds the script", title="bad options")
    if folder is None and path.resolve().is_relative_to(here):
        folder = here
    launch = ""
    if folder is not None and here.is_relative_to(folder) and here != folder:
        launch = here.relative_to(folder).as_posix()
    return replace(config, run=replace(config.run, script=str(path), args=tuple(args),
                                       code=str(folder) if folder is not None else None),
                   launch_dir=launch)


async def refresh_runs(config: ClusterConfig) -> tuple[list[RunInfo], list[str]]:
    """``list_runs`` with every run that may be alive re-examined on its hosts (``corral
    status``), and the ids of the runs whose hosts could not be reached (their record kept)."""
    from remote.hosts.pool import HostPool
    from remote.run.refresh import refresh_runs_report

    pool = HostPool(config)
    try:
        return await refresh_runs_report(config, pool)
    finally:
        await pool.aclose()


async def refresh_unfollowed(config: ClusterConfig, runs: list[RunInfo]
                             ) -> tuple[list[RunInfo], list[str]]:
    """``runs`` with each one nobody follows (``unfollowed``: a ``--detach`` run nobody
    attached to) re-examined on its hosts as ``corral status`` does, so that a report of one
    that ended says how; and the ids of those whose hosts could not be reached."""
    from remote.hosts.pool import HostPool
    from remote.records.runs import unfollowed
    from remote.run.refresh import refresh_run

    if not any(unfollowed(info) for info in runs):
        return runs, []  # no connection opened for runs whose record is the truth
    pool = HostPool(config)
    refreshed: list[RunInfo] = []
    unverified: list[str] = []
    try:
        for info in runs:
            updated, reached = ((await refresh_run(config, pool, info)) if unfollowed(info)
                                else (info, True))
            refreshed.append(updated)
            if not reached:
                unverified.append(info.run_id)
    finally:
        await pool.aclose()
    return refreshed, unverified


def stop_wait(config: ClusterConfig, run_id: str, grace_s: float) -> tuple[float, str]:
    """How long a stop of ``run_id`` asked with ``grace_s`` waits before it kills (longer for
    a low-communication run: its round ends first), and the line that says so ("" if none)."""
    from remote.run.stop import stop_wait as wait

    return wait(config, run_id, grace_s)


async def leave_host(config: ClusterConfig, run_id: str, host: str) -> str:
    """``corral leave``: ask ``host`` to leave the running run ``run_id`` at its next step
    boundary (its ranks read the request written there); the path written on the host.
    ``MembershipRefused`` names why a leave cannot be asked (the master's host, a host not
    in the run, a run without live membership)."""
    from remote.hosts.pool import HostPool
    from remote.run.membership import request_leave

    info = read_run_info(config, resolve_run_id(config, run_id))
    pool = HostPool(config)
    try:
        return await request_leave(config, pool, info, host)
    finally:
        await pool.aclose()


def leave_by_restart(config: ClusterConfig, run_id: str, host: str) -> tuple[str, ClusterConfig]:
    """``corral leave HOST --restart`` on a run without live membership (a script run as is):
    the run's id and the cluster it is launched again on (the run's hosts less ``host``, in
    cluster.toml's order, its written split dropped); ``MembershipRefused`` when ``host``
    cannot be taken out so. The caller stops the run and launches it with ``--resume`` there."""
    from dataclasses import replace

    from remote.run.membership import MembershipRefused, restart_refusal

    info = read_run_info(config, resolve_run_id(config, run_id))
    if (why := restart_refusal(config, info, host)) is not None:
        raise MembershipRefused(why)
    others = tuple(h for h in config.hosts if h.name in info.hosts and h.name != host)
    return info.run_id, replace(config, hosts=others, run=replace(config.run, split=None))


async def join_host(config: ClusterConfig, run_id: str, host: str) -> float:
    """``corral join``: bring ``host`` (a host of cluster.toml not in the run ``run_id``, or
    one that left) into the running run: check it with the run's hosts, push, start its
    launcher, and leave the join record the run's follower takes in (``remote/run/join.py``).
    The seconds it took. ``MembershipRefused`` names why a join cannot be made (nothing of
    it is left running)."""
    import time

    from remote.run.join import request_join

    info = read_run_info(config, resolve_run_id(config, run_id))
    record = await request_join(config, info, host)
    return time.time() - record.asked


async def time_join(config: ClusterConfig, run_id: str, host: str) -> JoinFigures:
    """``join_host`` timed to the joiner's first step (``bench/membership.py``): the seconds
    to its launcher, to rank 0's event that let it in, and the state bytes sent, read from
    the run's local copy (a follower of the run must keep it: ``corral run``, the console)."""
    from remote.run.join import join_and_time

    info = read_run_info(config, resolve_run_id(config, run_id))
    return await join_and_time(config, info, host)


async def fetch_results(config: ClusterConfig, info: RunInfo, *,
                        what: Literal["final", "checkpoint"],
                        progress: Callable[[str], None]) -> Fetched:
    """Copy a run's final model (or newest checkpoint) to this machine, verified."""
    from remote.hosts.pool import HostPool
    from remote.run.fetch import fetch_results as fetch_over

    pool = HostPool(config)
    try:
        return await fetch_over(config, pool, info, what=what, progress=progress)
    finally:
        await pool.aclose()


async def fetch_outputs(config: ClusterConfig, info: RunInfo, paths: Sequence[str], *,
                        all_hosts: bool, progress: Callable[[str], None]) -> list[Fetched]:
    """Copy a script run's working directory (or ``paths`` in it) from rank 0's host, or every
    host, to this machine, verified."""
    from remote.hosts.pool import HostPool
    from remote.run.fetch_outputs import fetch_outputs as fetch_over

    pool = HostPool(config)
    try:
        return await fetch_over(config, pool, info, paths, all_hosts=all_hosts,
                                progress=progress)
    finally:
        await pool.aclose()


def is_script_run(config: ClusterConfig, info: RunInfo) -> bool:
    """Whether the recorded run ran a user's script (``corral fetch`` fetches its outputs)."""
    from remote.run.fetch import is_script_run as script_run

    return script_run(config, info)


async def profile_cluster(config: ClusterConfig) -> list[HostProfile]:
    """Benchmark the model on every host (``corral profile``)."""
    from remote.hosts.profile_hosts import profile_cluster as profile_hosts

    return await profile_hosts(config)


async def setup_cluster(config: ClusterConfig, names: Sequence[str],
                        progress: Callable[[str, str], None]) -> list[SetupResult]:
    """Set up the named hosts (all when none are named) for corral (``corral setup``)."""
    from remote.hosts.setup import setup_cluster as setup_hosts

    return await setup_hosts(config, names, progress)


async def trust_host(config: ClusterConfig, host_name: str,
                     confirm: Callable[[str], bool]) -> str:
    """Record a host's SSH key as trusted once ``confirm`` says yes (``corral trust``)."""
    from remote.hosts.trust import trust_host as trust_over_ssh

    return await trust_over_ssh(config, host_name, confirm)


def send_test_notice(config: ClusterConfig) -> list[str]:
    """One notice to every ``[notify]`` URL, waited for (``corral notify --test``); what went
    wrong, in words."""
    from remote.run.notify import send_test

    return send_test(config)


# ---- Kubernetes export (``corral export k8s``; the work is in ``remote.k8s``) ----------------



def export_kubernetes(config: ClusterConfig, requested: str | None = None, *,
                      run_id: str | None = None) -> K8sExport:
    """The run ``config`` describes as Kubernetes manifests, in the ``requested`` format
    (None: chosen from the host kinds); ``UsageError`` names the key and fix of what cannot
    be exported."""
    from remote.k8s.export import export_manifests

    return export_manifests(config, requested, run_id=run_id)


def write_kubernetes(export: K8sExport, out: Path) -> list[Path]:
    """Write one YAML file per object of ``export`` into ``out``; the paths written."""
    from remote.k8s.export import write_export

    return write_export(export, out)


def kubernetes_next_steps(config: ClusterConfig, export: K8sExport, source: str) -> list[str]:
    """The commands that apply ``export`` (from ``source``: a folder or a file), follow its
    pods and copy its run directory back to where corral looks for runs."""
    from remote.k8s.export import next_steps

    return next_steps(config, export, source)
