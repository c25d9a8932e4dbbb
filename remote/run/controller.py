"""``SshRunController``: the remote layer's implementation of ``remote.api.RunController``.

``start`` returns a handle at once; iterating its ``events()`` drives the run: pre-flight check,
push, launch on every host, then the merged event tail until the run ends. ``attach`` follows a
run started earlier (by this or another process) from the local copy's offsets.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from profiles.user_errors import CorralError, UsageError
from remote.config.cluster import ClusterConfig
from remote.config.rules import run_name_problem
from remote.events import (
    FINAL_RUN_STATES,
    CheckReport,
    HostStatus,
    LogLine,
    RunEvent,
    RunState,
    RunStatus,
    StopReport,
)
from remote.hosts.pool import HostPool
from remote.records.runs import (
    RunInfo,
    new_run_id,
    read_run_info,
    record_cleanup,
    resolve_run_id,
    run_dir_for,
    run_to_resume,
    update_run_state,
    write_run_info,
)
from remote.run import launch_lock
from remote.run.follower import RunFollower
from remote.run.monitor import RunMonitor
from remote.run.recovery import REPEATED_FAILURES, count_failure, restart_refusal
from remote.run.start import launch_run
from remote.run.stop import stop_run
from trainer.settings.run_settings import POLICIES


class SshRunHandle:
    """One run: its event stream (``events``) and ``stop``."""

    def __init__(self, controller: SshRunController, info: RunInfo, *, launch: bool,
                 resume: bool = False, policy: str | None = None) -> None:
        self.run_id = info.run_id
        self.name = info.name
        self._controller = controller
        self._info = info
        self._launch = launch
        self._resume = resume
        self._policy = policy
        self._monitor: RunMonitor | None = None
        self._stopping = False
        self._stop_clean = True
        """Whether the last stop after a failure left nothing behind (a restart needs it)."""
        self._lost: dict[str, str] = {}
        """Hosts lost in the last attempt, and why."""
        self._config = controller.config
        self._pool = controller.pool
        """The run's hosts: the controller's, less the ones dropped (``on_host_loss``)."""

    @property
    def config(self) -> ClusterConfig:
        """The cluster this run belongs to (less any host dropped with ``on_host_loss``)."""
        return self._config

    @property
    def run_dir(self) -> str:
        """``<run_root>/<run_id>`` as the hosts see it."""
        return run_dir_for(self.config, self.run_id)

    def _status(self, state: RunState, detail: str = "", **extra: object) -> RunStatus:
        if state != "idle" and (self._launch or self._info.state not in FINAL_RUN_STATES):
            # Following a run that has ended does not rewrite its recorded outcome.
            update_run_state(self.config, self.run_id, state, detail.split("\n", 1)[0])
        return RunStatus(t=time.time(), run_id=self.run_id, state=state, detail=detail,
                         **extra)  # type: ignore[arg-type]

    async def events(self) -> AsyncIterator[RunEvent]:
        """Every event of the run, ending with its final ``RunStatus``.

        With ``[run] max_restarts``, a run that fails after it ran (a rank died, a host dropped,
        a hang) is relaunched from its newest checkpoint, up to that many times (each restart a
        ``launching`` status and a log line); ``on_host_loss`` may drop a host first."""
        restarts, failure_streaks = 0, dict[str, int]()
        try:
            while True:
                if self._launch:
                    launched = True
                    async for event in self._launch_once():
                        if isinstance(event, RunStatus) and event.state in FINAL_RUN_STATES:
                            launched = False
                        yield event
                    if not launched:
                        return
                final: RunStatus | None = None
                async for event in self._follow():
                    if isinstance(event, RunStatus) and event.state in FINAL_RUN_STATES:
                        final = event
                        break
                    yield event
                if final is None:
                    return
                if (failing := count_failure(failure_streaks, final)) is not None:
                    self._lost.setdefault(failing, f"failed {REPEATED_FAILURES} times in a row")
                if self._can_drop_lost_hosts(final):
                    for event in self._drop_lost_hosts(final):
                        yield event
                    self._resume = True
                    continue
                why = restart_refusal(final, restarts, self.config.run.max_restarts,
                                      wanted=self._launch and not self._stopping,
                                      stop_clean=self._stop_clean)
                if why is not None:
                    yield final if not why else replace(final, detail=f"{final.detail}\n({why})")
                    return
                restarts += 1
                cause = final.detail.split("\n", 1)[0]
                note = (f"restart {restarts} of {self.config.run.max_restarts} after: {cause}; "
                        "resuming from the newest checkpoint")
                yield LogLine(t=time.time(), host="*", rank=None, text=note)
                yield self._status("launching", note)
                self._resume = True
        finally:
            if self._pool is not self._controller.pool:
                await self._pool.aclose()

    def _can_drop_lost_hosts(self, final: RunStatus) -> bool:
        """``on_host_loss = "continue"``, the run failed on a lost host (or one that failed
        ``REPEATED_FAILURES`` attempts in a row), and it can go on without it (the master,
        which holds the rendezvous, is not lost)."""
        return (self.config.run.on_host_loss == "continue" and final.state == "failed"
                and self._launch and not self._stopping and final.failed_host in self._lost
                and self.config.cluster.master not in self._lost and self._stop_clean
                and len(self._lost) < len(self.config.hosts))

    def _drop_lost_hosts(self, final: RunStatus) -> list[RunEvent]:
        """Go on without the lost hosts: same global batch, re-split among the others."""
        lost = dict(self._lost)
        remaining = tuple(h for h in self.config.hosts if h.name not in lost)
        self._config = replace(self.config, hosts=remaining,
                               run=replace(self.config.run, split=None))
        self._pool = HostPool(self._config)
        self._info = replace(self._info, hosts=tuple(h.name for h in remaining))
        write_run_info(self.config, self._info)
        names = ", ".join(h.name for h in remaining)
        note = (f"dropped {', '.join(sorted(lost))} from the run ({final.detail.splitlines()[0]});"
                f" continuing on {names} from the newest checkpoint, the global batch of "
                f"{self.config.run.global_batch} re-split among them (`corral run --resume` "
                "later brings the host back)")
        now = time.time()
        return [*(HostStatus(t=now, host=h, state="failed", detail=f"dropped from the run: {why}")
                  for h, why in sorted(lost.items())),
                LogLine(t=now, host="*", rank=None, text=note), self._status("launching", note)]

    async def _launch_once(self) -> AsyncIterator[RunEvent]:
        """Lock, check, push and launch; ends with a final status only when that failed."""
        pool = self._pool
        try:
            await launch_lock.acquire(pool, self.config, self.run_id)
        except launch_lock.LaunchLocked as exc:
            yield self._status("failed", f"{exc.title}: {exc}")
            return
        except CorralError:
            pass  # the master cannot be reached: the check below says so, with its fix
        # A final status is yielded only after the lock is released: its reader stops reading
        # there, and a generator left suspended would release the lock only when collected.
        final: RunStatus | None = None
        try:
            async with contextlib.aclosing(launch_run(
                    pool, self.config, self._info, resume=self._resume, policy=self._policy,
                    status=self._status, preflight=self._controller.preflight)) as events:
                async for event in events:
                    if isinstance(event, RunStatus) and event.state in FINAL_RUN_STATES:
                        final = event
                        break
                    yield event
        except CorralError as exc:
            # Whatever was started is stopped again: a failed launch leaves nothing behind.
            await stop_run(pool, self.run_dir, self.run_id, grace_s=2.0)
            final = self._status("failed", f"{exc.title}: {exc}")
        finally:
            await launch_lock.release(pool, self.config, self.run_id)
        with contextlib.suppress(CorralError):
            self._info = read_run_info(self.config, self.run_id)
        if final is not None:
            yield final

    async def _follow(self) -> AsyncIterator[RunEvent]:
        follower = RunFollower(self.config, self._pool, self._info, launching=self._launch,
                               stop_requested=self._stopping, status=self._status)
        self._monitor = follower.monitor
        async for event in follower.events():
            if isinstance(event, RunStatus) and event.state in FINAL_RUN_STATES:
                # Known before the final status goes out (its reader stops reading there).
                self._lost, self._stop_clean = follower.outcome.lost, follower.outcome.stop_clean
            yield event

    async def stop(self, *, grace_s: float = 10.0) -> StopReport:
        """TERM every host's process group, KILL after ``grace_s``, verify nothing is left.

        A run that already ended (completed, failed, stopped) keeps its recorded outcome; what
        the stop found goes to the record's ``cleanup``."""
        self._stopping = True
        if self._monitor is not None:
            self._monitor.stop_requested = True
        outcome = self._recorded_state()
        if outcome not in FINAL_RUN_STATES:
            update_run_state(self.config, self.run_id, "stopping")
        report = await stop_run(self._pool, self.run_dir, self.run_id,
                                grace_s=grace_s, hosts=list(self._info.hosts))
        record_cleanup(self.config, self.run_id, report)
        if self._monitor is None and report.clean and outcome not in FINAL_RUN_STATES:
            update_run_state(self.config, self.run_id, "stopped")
        return report

    def _recorded_state(self) -> str:
        try:
            return read_run_info(self.config, self.run_id).state
        except CorralError:
            return self._info.state


class SshRunController:
    """Runs of one cluster.toml over SSH (and ``local`` hosts)."""

    def __init__(self, config: ClusterConfig, *, preflight: bool = True) -> None:
        self.config = config
        self.pool = HostPool(config)
        self.preflight = preflight
        """Run the pre-flight check before each launch (off only to save time in tests)."""

    async def check(self) -> CheckReport:
        """Pre-flight check of every host in parallel, with the launch plan when it passes."""
        from remote.run.preview import check_with_preview

        return await check_with_preview(self.config, self.pool)

    async def start(self, *, resume: bool | str = False, policy: str | None = None,
                    name: str | None = None) -> SshRunHandle:
        """A handle on a new run named ``name``, else ``[run] name``. With ``resume``, an
        earlier run relaunched from its newest checkpoint: the run it names (a run id, name or
        unique start of an id), or with ``True`` the newest run that has a checkpoint (a
        resumed run keeps its own name unless one is given)."""
        if policy is not None and policy not in POLICIES:
            raise CorralError(f"unknown policy {policy!r}: use {', '.join(POLICIES[:-1])} or "
                              f"{POLICIES[-1]}")
        if name is not None and (problem := run_name_problem(name)):
            raise UsageError(f"--name {name!r}: {problem}", title="bad run name")
        hosts = tuple(h.name for h in self.config.hosts)
        if resume:
            named = resume if isinstance(resume, str) else None
            previous = await run_to_resume(self.config, self.pool, named)
            info = replace(previous, state="checking", hosts=hosts,
                           config_path=str(self.config.path), name=name or previous.name)
        else:
            info = RunInfo(run_id=new_run_id(self.config.cluster.name),
                           cluster=self.config.cluster.name, state="checking",
                           started=time.time(), hosts=hosts, config_path=str(self.config.path),
                           name=name or self.config.run.name or "")
        write_run_info(self.config, info)
        return SshRunHandle(self, info, launch=True, resume=bool(resume), policy=policy)

    async def attach(self, run_id: str) -> SshRunHandle:
        """Follow recorded run ``run_id`` (or the one run whose id starts with it) from the last
        event this machine's copy holds. Following changes nothing on the hosts."""
        info = read_run_info(self.config, resolve_run_id(self.config, run_id))
        return SshRunHandle(self, info, launch=False)

    async def aclose(self) -> None:
        """Close every SSH connection (runs keep going on the hosts)."""
        await self.pool.aclose()


def open_controller(path: str | os.PathLike[str]) -> SshRunController:
    """Load ``path`` (a cluster.toml) and return its controller."""
    from remote.config.cluster import load_cluster

    return SshRunController(load_cluster(path))

