"""Which recorded run ``corral run --resume`` continues: the hosts are asked which runs have a
checkpoint (over SSH, hence here above the local records of ``remote/records/``).

A plain script's snapshot is its own business (minGPT's ``snapshot.pt``, nanoGPT's
``--init_from=resume``): what it needs is to run again where it wrote it, as re-running the
same torchrun command does. So for a cluster.toml that runs a script, a run is resumable when
a host holds its working directories (``RunLayout.script_cwd``), and the relaunch keeps them:
the launch refreshes the pushed code there and leaves the script's own files.
"""

from __future__ import annotations

from profiles.user_errors import CorralError, UsageError
from remote.config.cluster import ClusterConfig
from remote.hosts.pool import HostPool
from remote.hosts.transport import Transport, shell_path
from remote.records.runs import (
    KNOWN_IDS_SHOWN,
    RUN_ID_RE,
    RunInfo,
    list_runs,
    read_run_info,
    resolve_run_id,
    run_dir_for,
)
from remote.run.refresh import live_processes
from trainer.run_layout import IN_RUN_DIR, RunLayout


def _resumable(config: ClusterConfig) -> tuple[str, str, str]:
    """What marks a run resumable in its directory: a checkpoint of corral's trainer, or for a
    script the working directories its snapshot lies in; as (the folder of the run directory
    it is in, a shell glob of it from the run directory, its name in messages)."""
    if config.run.script is not None:
        cwd = RunLayout.SCRIPT_CWD
        return cwd, IN_RUN_DIR.path(cwd), "script working directory"
    return RunLayout.CHECKPOINTS, IN_RUN_DIR.checkpoints_glob(), "checkpoint"


async def runs_with_checkpoints(config: ClusterConfig, pool: HostPool) -> dict[str, list[str]]:
    """Per run id: the hosts whose run directory holds at least one checkpoint file (for a
    script: its working directories; one command per reachable host; an unreachable host
    simply adds nothing)."""
    root = shell_path(config.cluster.run_root.rstrip("/"))

    async def listing(transport: Transport) -> str:
        checkpoints = f"*/{_resumable(config)[1]}"
        done = await transport.run(f"cd {root} 2>/dev/null && ls -1d {checkpoints} 2>/dev/null; "
                                   "true", timeout=30.0)
        return done.stdout

    found: dict[str, list[str]] = {}
    for host, result in (await pool.gather(listing)).items():
        if isinstance(result, BaseException):
            continue
        for line in result.splitlines():
            run_id = line.split("/", 1)[0]
            if RUN_ID_RE.match(run_id) and host not in found.setdefault(run_id, []):
                found[run_id].append(host)
    return found


async def run_to_resume(config: ClusterConfig, pool: HostPool, named: str | None) -> RunInfo:
    """The run ``corral run --resume [RUN]`` continues: the named one, else the newest run of
    this cluster that has a checkpoint on a host (a script's: its working directories). Runs
    without one (a failed pre-flight check, a run stopped before its first checkpoint) are
    passed over: resuming them would silently start from step 0."""
    if named is not None and not named.strip():
        raise UsageError("--resume \"\" names no run: give a run id or name (corral status "
                         "lists them), or --resume alone for the newest", title="bad --resume")
    with_checkpoints = await runs_with_checkpoints(config, pool)
    folder, _, what = _resumable(config)
    if named is not None:
        info = read_run_info(config, resolve_run_id(config, named))
        if info.run_id not in with_checkpoints:
            looked = RunLayout(run_dir_for(config, info.run_id)).path(folder)
            raise CorralError(f"run {info.run_id} has no {what} on any reachable host "
                              f"(looked in {looked}"
                              f" on {', '.join(info.hosts)}): nothing to resume from",
                              title="nothing to resume")
        return info
    runs = list_runs(config)
    for info in runs:
        if info.run_id in with_checkpoints:
            return info
    looked = ", ".join(r.run_id for r in runs[:KNOWN_IDS_SHOWN]) or "none recorded"
    raise CorralError(
        f"no run of cluster {config.cluster.name!r} has a {what} to resume from (runs: "
        f"{looked}); start a new one with `corral run`", title="nothing to resume")


async def refuse_live(config: ClusterConfig, pool: HostPool, run: RunInfo, *,
                      instead_of: RunInfo | None = None) -> None:
    """Refuse to resume while ``run``'s processes still run (touching nothing): a second
    launch beside it would fail on them. ``instead_of``: the run a resume without a RUN
    chose, older than the live ``run``, which has no checkpoint yet."""
    live = await live_processes(config, pool, run)
    if not live:
        return
    where = ", ".join(f"{n} process(es) on {h}" for h, n in sorted(live.items()))
    if instead_of is None:
        raise CorralError(
            f"run {run.run_id} is still running ({where}): there is nothing to "
            f"resume. Follow it with `corral attach {run.run_id}`; to relaunch it "
            f"from its newest checkpoint, end it first with `corral stop {run.run_id}`",
            title="run still running")
    raise CorralError(
        f"run {run.run_id} is still running ({where}) and has no checkpoint yet: "
        f"`corral run --resume` would resume the older run {instead_of.run_id} beside "
        f"it. Follow it with `corral attach {run.run_id}`, or end it first with "
        f"`corral stop {run.run_id}`", title="run still running")
