"""``SshRunHandle``: one run, its lifecycle loop (``events``) and its ``stop``.

The loop (``events``) does each phase's work (``_act``: the check, the push, the launch, the
follower of a running attempt) and hands what the phase reported to ``_decide``, which alone
moves the run (``remote/run/lifecycle.py``): to its next phase, to ``stopping`` after a failure,
to a restart (``remote/run/recovery.py``) or to its end (``remote/run/attempt_end.py`` decides
what an attempt's end means). It alone decides and makes every stop, each through
``_stop_hosts``: what a failed launch may have started, the other hosts after a failure
(``StopCause.FAILURE``), the processes that linger after every rank finished, a failed
attempt's stragglers, and ``stop`` (``StopCause.REQUESTED``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig
from remote.events import FINAL_RUN_STATES, LogLine, RankEvent, RunEvent, RunStatus, StopReport
from remote.hosts.pool import HostPool
from remote.records.history import recorded_starts
from remote.records.runs import RunInfo, local_run_dir, run_dir_for
from remote.run import launch_lock
from remote.run.attempt_end import Leftovers, settle_attempt, straggler_sweep_wanted
from remote.run.failures import HostLost
from remote.run.follower import DONE_GRACE_S, RunFollower
from remote.run.lifecycle import (
    NEXT_PHASE,
    AttemptEnded,
    CauseSettled,
    Finding,
    LaunchFailed,
    Lifecycle,
    Phase,
    PhaseDone,
    RanksLinger,
    RunOutcome,
    Signal,
    StopCause,
    StopRequest,
    TailsOpen,
)
from remote.run.record import RunRecord
from remote.run.recovery import (
    REPEATED_FAILURES,
    can_go_on_without,
    count_failure,
    dropped_note,
    dropped_statuses,
    restart_note,
    restart_refusal,
)
from remote.run.start import Launch, push_code_to_hosts, run_check, start_hosts
from remote.run.stop import LAUNCH_STOP_GRACE_S, STOP_GRACE_ON_FAILURE_S, stop_run, stop_wait


class SshRunHandle:
    """One run: its event stream (``events``) and ``stop``."""

    def __init__(self, config: ClusterConfig, pool: HostPool, info: RunInfo, *, launch: bool,
                 resume: bool = False, policy: str | None = None,
                 record: RunRecord | None = None) -> None:
        self.run_id = info.run_id
        self.name = info.name
        self._cluster_config = config
        """The cluster as loaded, every host in it (``config`` drops lost ones)."""
        self._cluster_pool = pool
        """The controller's connections: they reach every host, the dropped ones too."""
        self._info = info
        self._launch = launch
        self._resume = resume
        self._policy = policy
        self._stop = StopRequest()
        """Whether the run is being stopped, and why (the follower and its monitor ask it)."""
        if record is None:  # following: a run that has ended keeps its recorded outcome
            record = RunRecord(config, info,
                               outcome_kept=not launch and info.state in FINAL_RUN_STATES)
        self._life = Lifecycle(info.run_id, Phase.CHECKING if launch else Phase.RUNNING,
                               record)
        self._record = record
        """The run's ``run.json``: only the lifecycle's moves and this handle's stop change it."""
        self._attempt: Launch | None = None
        """The launch under way (checking, pushing, launching), while it holds the lock."""
        self._follower: RunFollower | None = None
        self._attempt_stop: asyncio.Task[StopReport] | None = None
        """The stop the loop started while the attempt is followed (``_stop_meanwhile``)."""
        self._restarts = 0
        self._failure_streaks: dict[str, int] = {}
        self._config = config
        self._pool = pool
        """The run's hosts: the controller's, less the ones dropped (``on_host_loss``)."""

    @property
    def config(self) -> ClusterConfig:
        """The cluster this run belongs to (less any host dropped with ``on_host_loss``)."""
        return self._config

    @property
    def run_dir(self) -> str:
        """``<run_root>/<run_id>`` as the hosts see it."""
        return run_dir_for(self.config, self.run_id)

    async def events(self) -> AsyncIterator[RunEvent]:
        """Every event of the run, ending with its final ``RunStatus``.

        The lifecycle loop: each phase's work (``_act``) yields events and reports what
        happened; ``_decide`` alone moves the run to its next phase. With ``[run]
        max_restarts``, a run that fails after it ran (a rank died, a host dropped, a hang) is
        relaunched from its newest checkpoint, up to that many times (each restart a
        ``launching`` status and a log line); ``on_host_loss`` may drop a host first."""
        life = self._life
        try:
            if self._launch:
                yield life.announce()
            elif self._info.state in FINAL_RUN_STATES and not self._info.pgids:
                # It ended before it started a host: nothing to follow, its outcome at once.
                yield RunStatus(t=time.time(), run_id=self.run_id,
                                state=self._info.state,  # type: ignore[arg-type]
                                detail=self._info.detail)
                return
            else:  # the copy's start events are behind its offsets: say what they recorded
                for line in recorded_starts(local_run_dir(self._config, self.run_id)):
                    yield RankEvent(host=line.host, event=line.event)
            while life.phase is not Phase.ENDED:
                async for item in self._act(life.phase):
                    if isinstance(item, Signal):
                        for event in await self._decide(item):
                            yield event
                    else:
                        yield item
        finally:
            if life.phase is not Phase.ENDED:  # a detach: the run trains on, unfollowed
                self._record.detached()
            await self._unlock()
            if self._pool is not self._cluster_pool:
                await self._pool.aclose()

    async def _act(self, phase: Phase) -> AsyncIterator[RunEvent | Signal]:
        """The work of ``phase``: its events, then what happened."""
        if phase is Phase.RESTARTING:
            yield PhaseDone()
        elif phase is Phase.RUNNING:  # following a run started earlier
            async for item in self._follow():
                yield item
        else:
            try:
                async for event in self._launch_phase(phase):
                    yield event
            except LaunchFailed as failed:
                yield failed
                return
            except CorralError as exc:  # whatever was started is stopped again (``_decide``)
                yield LaunchFailed(f"{exc.title}: {exc}", may_have_started=True)
                return
            yield PhaseDone()
            if phase is Phase.LAUNCHING:
                async for item in self._follow():
                    yield item

    async def _launch_phase(self, phase: Phase) -> AsyncIterator[RunEvent]:
        """Check (taking the launch lock first), push or launch."""
        if phase is Phase.CHECKING:
            try:
                took_over = await launch_lock.acquire(self._pool, self.config, self.run_id)
                if took_over:
                    yield LogLine(t=time.time(), host="*", rank=None, text=took_over)
            except launch_lock.LaunchLocked as exc:
                # Another launch holds the lock: this one ran nothing and records nothing.
                self._record.forget()
                raise LaunchFailed(f"{exc.title}: {exc}") from None
            except launch_lock.LockNotMade as exc:
                raise LaunchFailed(f"{exc.title}: {exc}") from None
            except CorralError:
                pass  # the master cannot be reached: the check says so, with its fix
            self._attempt = Launch(pool=self._pool, config=self.config, info=self._info)
            steps = run_check(self._attempt)
        elif phase is Phase.PUSHING:
            assert self._attempt is not None
            steps = push_code_to_hosts(self._attempt)
        else:
            assert self._attempt is not None
            steps = start_hosts(self._attempt, resume=self._resume, policy=self._policy,
                                restart=self._restarts)
        async with contextlib.aclosing(steps):
            async for event in steps:
                yield event
                if self._record.stop_was_asked():  # `corral stop` from another process
                    raise LaunchFailed("stopped by `corral stop` before it ran", stopped=True)

    async def _follow(self) -> AsyncIterator[RunEvent | Signal]:
        self._follower = RunFollower(self.config, self._pool, self._info,
                                     launching=self._launch, stop=self._stop,
                                     record_error=lambda: self._record.write_error)
        async for item in self._follower.events():
            yield item

    async def _unlock(self) -> None:
        """Release the launch lock if this handle holds it (the launch is over)."""
        if self._attempt is not None:
            self._attempt = None
            await launch_lock.release(self._pool, self.config, self.run_id)
            self._info = self._record.recorded()

    async def _decide(self, signal: Signal) -> list[RunEvent]:
        """The one place that moves the run: from what its phase reported, the next phase
        and the events that say so."""
        life = self._life
        if isinstance(signal, LaunchFailed):
            if signal.leaves_processes:  # a failed launch leaves nothing behind
                await self._stop_hosts(grace_s=LAUNCH_STOP_GRACE_S)
            # The lock goes before the final status: its reader stops reading there.
            await self._unlock()
            return [life.end(RunOutcome.STOPPED if signal.stopped else RunOutcome.FAILED,
                             signal.detail, report=signal.report,
                             failed_host=signal.failed_host)]
        if isinstance(signal, PhaseDone):
            if life.phase is Phase.LAUNCHING:
                assert self._attempt is not None
                life.launched(**self._attempt.facts_recorded())
                await self._unlock()  # launched: the follower takes over (``TailsOpen``)
                return []
            if life.phase is Phase.RESTARTING:
                self._stop.next_attempt()
                self._resume = True
            checked = self._attempt.report if self._attempt is not None else None
            if life.phase is Phase.CHECKING and checked is not None:  # the mesh, for the views
                return [life.move(NEXT_PHASE[life.phase], links=checked.links,
                                  estimate=checked.estimate)]
            return [life.move(NEXT_PHASE[life.phase])]
        if isinstance(signal, TailsOpen):
            return [life.move(Phase.RUNNING)]
        if isinstance(signal, CauseSettled):
            if not self._launch:
                return []  # following changes nothing on the hosts
            self._stop.request(StopCause.FAILURE)
            self._stop_meanwhile(signal.left)
            who = signal.cause.host if signal.cause else "?"
            return [life.move(Phase.STOPPING,
                              f"{who} failed; stopping {', '.join(signal.left) or 'nothing'}")]
        if isinstance(signal, RanksLinger):
            if not self._launch:
                return []  # following changes nothing on the hosts
            assert self._follower is not None
            self._follower.lingering_ended(signal.waited_s)  # the run completed all the same
            self._stop_meanwhile(signal.left)
            return [LogLine(t=time.time(), host="*", rank=None, text=(
                f"every rank finished {DONE_GRACE_S:.0f} s ago but processes on "
                f"{', '.join(signal.left)} have not exited; ending them (the run completed)"))]
        return await self._after_attempt(signal)

    async def _after_attempt(self, ended: AttemptEnded) -> list[RunEvent]:
        """What the attempt's end means (``settle_attempt``), said to its trackers; then the
        run ends or restarts."""
        assert self._follower is not None
        task, self._attempt_stop = self._attempt_stop, None
        stop = await task if task is not None else None
        swept = None
        if straggler_sweep_wanted(ended, stop, launching=self._launch):
            # Every launcher ended by itself; make sure no straggler rank is left either.
            swept = await self._stop_hosts(grace_s=STOP_GRACE_ON_FAILURE_S)
        final, left = settle_attempt(ended, stop=stop, swept=swept, launching=self._launch,
                                     info=self._follower.info)
        said = await self._follower.close_trackers(final.state)
        return [*said, *self._end_or_restart(final, dict(ended.lost), left)]

    def _end_or_restart(self, final: Finding, lost: dict[str, HostLost],
                        left: Leftovers) -> list[RunEvent]:
        """End the run, or restart it (perhaps without the hosts it lost)."""
        if left.suspects:
            self._record.suspects(left.suspects)
        if (failing := count_failure(self._failure_streaks, final)) is not None:
            lost.setdefault(failing, HostLost(host=failing, t=time.time(),
                                              reason=f"failed {REPEATED_FAILURES} times in a row"))
        wanted = self._launch and not self._stop.by(StopCause.REQUESTED)
        if wanted and can_go_on_without(self.config, final, lost, stop_clean=left.stop_clean):
            return self._drop_lost_hosts(final, lost)
        why = restart_refusal(final, self._restarts, self.config.run.max_restarts,
                              wanted=wanted, stop_clean=left.stop_clean)
        if why is not None:
            return [self._life.end_with(final if not why else
                                        replace(final, detail=f"{final.detail}\n({why})"))]
        self._restarts += 1
        note = restart_note(final, self._restarts, self.config.run.max_restarts)
        return [LogLine(t=time.time(), host="*", rank=None, text=note),
                self._life.move(Phase.RESTARTING, note)]

    def _drop_lost_hosts(self, final: Finding, lost: dict[str, HostLost]) -> list[RunEvent]:
        """Go on without the lost hosts: same global batch, re-split among the others."""
        remaining = tuple(h for h in self.config.hosts if h.name not in lost)
        self._config = replace(self.config, hosts=remaining,
                               run=replace(self.config.run, split=None))
        self._pool = HostPool(self._config)
        # The dropped hosts stay in the record as suspect hosts: their processes may be left
        # (cut off, not stopped), and ``status`` and ``stop`` must still reach them there.
        suspects = tuple(sorted(set(self._info.suspect_hosts) | set(lost)))
        self._record.change(hosts=tuple(h.name for h in remaining), suspect_hosts=suspects)
        self._info = self._record.info
        note = dropped_note(final.detail, lost, [h.name for h in remaining],
                            self.config.run.global_batch)
        now = time.time()
        return [*dropped_statuses(lost, now), LogLine(t=now, host="*", rank=None, text=note),
                self._life.move(Phase.RESTARTING, note)]

    async def stop(self, *, grace_s: float = 10.0) -> StopReport:
        """TERM every host's process group, KILL after ``grace_s`` (longer for a
        low-communication run: ``stop_wait``), verify nothing is left.

        A run that already ended (completed, failed, stopped) keeps its recorded outcome; what
        the stop found goes to the record's ``cleanup``."""
        self._stop.request(StopCause.REQUESTED)
        outcome = self._record.recorded().state
        if outcome not in FINAL_RUN_STATES:
            self._life.stop_asked()
            self._record.ask_stop()
        if not self._launch:  # a launch lock this run holds (its corral died) goes too
            await launch_lock.release(self._cluster_pool, self.config, self.run_id)
        # Every host of the run, the dropped ones too (recorded as suspect hosts); the
        # controller's pool reaches them, this handle's only the hosts still in the run.
        record = self._record.recorded()
        known = {h.name for h in self._cluster_config.hosts}
        hosts = sorted(h for h in {*record.hosts, *record.suspect_hosts} if h in known)
        grace_s, _ = stop_wait(self._cluster_config, self.run_id, grace_s)
        report = await self._stop_hosts(grace_s=grace_s, hosts=hosts, pool=self._cluster_pool)
        self._record.cleanup(report)
        if outcome in FINAL_RUN_STATES:
            report = replace(report, outcome=RunOutcome(outcome))
        if self._follower is None and report.clean and outcome not in FINAL_RUN_STATES:
            self._life.stopped_unfollowed()
        return report

    def _stop_meanwhile(self, hosts: tuple[str, ...]) -> None:
        """``_stop_hosts`` in the background while the follower reads on (the other hosts after
        a failure, or lingering processes): the attempt ends once their launchers report it,
        and ``_after_attempt`` reads what the stop found."""
        self._attempt_stop = asyncio.create_task(
            self._stop_hosts(grace_s=STOP_GRACE_ON_FAILURE_S, hosts=list(hosts)))

    async def _stop_hosts(self, *, grace_s: float, hosts: list[str] | None = None,
                          pool: HostPool | None = None) -> StopReport:
        """The one way this handle stops the run's processes (``stop_run``: TERM, ``grace_s``,
        KILL, verified) on ``hosts`` (every host of the run by default), whatever the loop or
        ``stop`` decided it for: a failed launch, the other hosts after a failure, lingering
        processes, a failed attempt's stragglers, a stop asked for."""
        return await stop_run(pool or self._pool, self.run_dir, self.run_id, grace_s=grace_s,
                              hosts=hosts)
