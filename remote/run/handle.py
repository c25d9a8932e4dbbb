"""``SshRunHandle``: one run, its lifecycle loop (``events``) and its ``stop``.

The loop (``events``) does each phase's work (``_act``: the check, the push, the launch, the
follower of a running attempt) and hands what the phase reported to ``_heard``: the pure
``decide`` (``remote/run/decide.py``) alone moves the run and says what to do, and
``_perform`` alone does it: every stop of the run's processes (after a failed launch or a
failure, lingering ones, a failed attempt's stragglers), the lock's release, every write of
``run.json``, the hosts dropped, a follower's wait for the launching corral's word (a relaunch
is followed). A user's ``stop`` is a signal too (``StopAsked``), answered with the stop of
every host of the run and, once it is made (``StopMade``), the record's cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig
from remote.config.task_code import UserCode
from remote.events import FINAL_RUN_STATES, LogLine, RankEvent, RunEvent, RunStatus, StopReport
from remote.hosts.pool import HostPool
from remote.records.mesh import keep_mesh, kept_mesh
from remote.records.replay import RecordReplay
from remote.records.runs import RunInfo, local_run_dir, run_dir_for
from remote.run import launch_lock
from remote.run.actions import (
    Action,
    AwaitOwner,
    AwaitStop,
    CloseTrackers,
    DropHosts,
    EndCommands,
    ForgetJoin,
    LingerEnded,
    MarkStop,
    MembersChanged,
    StopHosts,
    StopJoiner,
    TailJoiner,
    Unlock,
    UnlockAbandoned,
)
from remote.run.decide import LoopState, decide
from remote.run.decide_waits import DeclareHung
from remote.run.follower import RunFollower
from remote.run.join import JOIN_STOP_GRACE_S, forget_join_record
from remote.run.lifecycle import (
    Answer,
    Heard,
    LaunchFailed,
    OwnerDecided,
    Phase,
    PhaseDone,
    RunOutcome,
    Signal,
    StopAsked,
    StopCause,
    StopFound,
    StopMade,
    StopRequest,
)
from remote.run.record import RunRecord
from remote.run.record_changes import RecordChange, RecordDetached, RecordForgotten, RecordState
from remote.run.refresh import live_processes
from remote.run.start import Launch, push_code_to_hosts, run_check, start_hosts
from remote.run.stop import stop_run, stop_wait_on_hosts


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
        self._policy = policy
        self._stop = StopRequest()
        """Whether the run is being stopped, and why (the follower and its monitor ask it;
        ``decide`` tells it with ``MarkStop``)."""
        if record is None:  # following: a run that has ended keeps its recorded outcome
            record = RunRecord(config, info,
                               outcome_kept=not launch and info.state in FINAL_RUN_STATES)
        # Followed: the hosts it records now (one that left before stays out, may join again).
        kept = tuple(h for h in config.hosts if h.name in info.hosts)
        in_run = replace(config, hosts=kept) if kept and not launch else config
        self._state = LoopState(run_id=info.run_id,
                                phase=Phase.CHECKING if launch else Phase.RUNNING,
                                launching=launch, config=in_run, followed=info, resume=resume,
                                cluster_hosts=config.hosts, left=frozenset(info.left_hosts))
        """What the loop knows between signals: only ``_heard`` replaces it."""
        self._record = record
        """The run's ``run.json``: what ``decide`` asks is written by ``_perform`` alone;
        besides, ``stop`` records its cleanup, a detach gives up the ownership, and a launch
        refused by the lock forgets the record (``_launch_phase``)."""
        self._attempt: Launch | None = None
        self._user: UserCode | None = None
        """The user code the newest launch located (``Launch.user``), for its follower."""
        """The launch under way (checking, pushing, launching), while it holds the lock."""
        self._follower: RunFollower | None = None
        self._attempt_stop: asyncio.Task[StopReport] | None = None
        """The stop the loop started while the attempt is followed (``StopHosts.meanwhile``)."""
        self._pool = pool
        """The run's hosts: the controller's, less the ones dropped (``on_host_loss``)."""
        self._added_pool: HostPool | None = None
        """Reaches the hosts cluster.toml got while the run trains (``_reach``), and the rest."""
        self._retired: list[HostPool] = []
        self._asked_report = StopReport(run_id=info.run_id)
        """What the user's newest stop found (``stop`` returns it)."""
        self._mesh_told = False
        """A seat opened on a running run was told the check's links (``_said``)."""
        self._replay = RecordReplay(local_run_dir(config, info.run_id))
        """The run's record on this machine, replayed to the seat before anything live: every
        attempt's and generation's events (a resumed or attached run's whole history)."""

    @property
    def config(self) -> ClusterConfig:
        """The cluster this run belongs to (less any host dropped with ``on_host_loss``)."""
        return self._state.config

    @property
    def run_dir(self) -> str:
        """``<run_root>/<run_id>`` as the hosts see it."""
        return run_dir_for(self.config, self.run_id)

    async def events(self) -> AsyncIterator[RunEvent]:
        """Every event of the run, ending with its final ``RunStatus``.

        The lifecycle loop: each phase's work (``_act``) yields events and reports what
        happened; ``decide`` alone moves the run to its next phase. With ``[run]
        max_restarts``, a run that fails after it ran (a rank died, a host dropped, a hang) is
        relaunched from its newest checkpoint, up to that many times (each restart a
        ``launching`` status and a log line); ``on_host_loss`` may drop a host first."""
        try:
            for line in self._replay.take():  # the record so far (none for a new run)
                yield RankEvent(host=line.host, event=line.event, replayed=True)
            if self._launch:
                await self._perform(RecordState(self._state.phase.shown))
                yield RunStatus(t=time.time(), run_id=self.run_id,
                                state=self._state.phase.shown)
            elif self._info.state in FINAL_RUN_STATES and not self._info.pgids:
                # It ended before it started a host: nothing to follow, its outcome at once.
                yield RunStatus(t=time.time(), run_id=self.run_id,
                                state=self._info.state,  # type: ignore[arg-type]
                                detail=self._info.detail, wall_s=self._info.wall_s)
                return
            while self._state.phase is not Phase.ENDED:
                async for item in self._act(self._state.phase):
                    if isinstance(item, RunEvent):
                        yield self._said(item)
                    else:
                        async for event in self._heard(item):
                            yield self._said(event)
        finally:
            if self._state.phase is not Phase.ENDED:  # a detach: the run trains on, unfollowed
                await self._perform(RecordDetached())
            await self._perform(Unlock())
            if self._pool is not self._cluster_pool:
                await self._pool.aclose()
            for added in (*self._retired, self._added_pool):
                if added is not None:
                    await added.aclose()

    def _said(self, event: RunEvent) -> RunEvent:
        """``event`` as the seat gets it: the check's links kept with the record when this
        process launched the run, told with the first status of a seat opened later."""
        if not isinstance(event, RunStatus):
            return event
        local_dir = local_run_dir(self._cluster_config, self.run_id)
        if self._launch and event.links:
            keep_mesh(local_dir, event.links, event.estimate)
        elif not self._launch and not self._mesh_told:
            self._mesh_told = True
            links, estimate = kept_mesh(local_dir)
            if links and not event.links:
                return replace(event, links=links, estimate=estimate)
        return event

    async def _heard(self, signal: Heard) -> AsyncIterator[RunEvent]:
        """Decide on ``signal`` and perform what was decided; an action whose result is a
        signal of its own (what a stop found) is decided on next."""
        heard: list[Heard] = [signal]
        while heard:
            decision = decide(self._state, heard.pop(0), time.time())
            self._state = decision.state
            for action in decision.actions:
                for item in await self._perform(action):
                    if isinstance(item, Answer):
                        heard.append(item)
                    else:
                        yield item
            for event in decision.events:
                if isinstance(event, RunStatus) and event.state in FINAL_RUN_STATES:
                    # The wall time its record now holds: every seat's header says the report's.
                    event = replace(event, wall_s=self._record.recorded().wall_s)
                yield event

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
            except CorralError as exc:  # whatever was started is stopped again (``decide``)
                yield LaunchFailed(f"{exc.title}: {exc}", may_have_started=True)
                return
            assert self._attempt is not None
            yield PhaseDone(checked=self._attempt.report,
                            facts=self._attempt.facts_recorded()
                            if phase is Phase.LAUNCHING else {})
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
                await self._perform(RecordForgotten())
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
            steps = start_hosts(self._attempt, resume=self._state.resume, policy=self._policy,
                                restart=self._state.restarts)
        async with contextlib.aclosing(steps):
            async for event in steps:
                yield event
                # This process's stop (``MarkStop``), or `corral stop` from another one.
                if self._stop.by(StopCause.REQUESTED) or self._record.stop_was_asked():
                    raise LaunchFailed("stopped by `corral stop` before it ran", stopped=True)

    async def _follow(self) -> AsyncIterator[RunEvent | Signal]:
        self._follower = RunFollower(self.config, self._pool, self._info,
                                     launching=self._launch, stop=self._stop,
                                     record_error=lambda: self._record.write_error,
                                     user=self._user, replay=self._replay)
        async for item in self._follower.events():
            yield item

    async def _perform(self, action: Action) -> list[RunEvent | Answer]:
        """The one place that does what ``decide`` asked: the events it says (the trackers'
        last lines) or what a stop found, for the loop to decide on next."""
        if isinstance(action, EndCommands) or (isinstance(action, StopHosts) and action.asked):
            self._asked_report = await self._user_stop(action)
            return [StopMade(self._asked_report)]
        if isinstance(action, StopHosts):
            hosts = list(action.hosts) if action.hosts is not None else None
            stopping = self._stop_hosts(grace_s=action.grace_s, hosts=hosts)
            if action.meanwhile:  # the attempt ends once the launchers report it
                self._attempt_stop = asyncio.create_task(stopping)
                return []
            report = await stopping
            return [StopFound(report, swept=True)] if action.report_back else []
        if isinstance(action, AwaitStop):
            task, self._attempt_stop = self._attempt_stop, None
            return [StopFound(await task if task is not None else None, swept=False)]
        if isinstance(action, AwaitOwner):  # its next attempt is followed with this record
            self._info = await self._record.owner_decided(self._info)
            return [OwnerDecided(self._info)]
        if isinstance(action, Unlock):
            if self._attempt is not None:
                self._user, self._attempt = self._attempt.user, None
                await launch_lock.release(self._pool, self.config, self.run_id)
        elif isinstance(action, UnlockAbandoned):
            await launch_lock.release(self._cluster_pool, self.config, self.run_id)
        elif isinstance(action, RecordChange):
            self._record.apply(action)
            self._info = self._record.info
        elif isinstance(action, MarkStop):
            if action.cause is None:
                self._stop.next_attempt()
            else:
                self._stop.request(action.cause)
        elif isinstance(action, DropHosts):  # ``decide`` dropped them from its config
            self._pool = HostPool(self.config)
        elif isinstance(action, MembersChanged):
            if self._follower is not None:
                self._follower.members_changed(action.left, action.joined)
        elif isinstance(action, TailJoiner):
            if self._follower is not None:
                self._follower.add_joiner(action.host, self._reach(action.host))
        elif isinstance(action, StopJoiner):  # nothing of a join that did not happen is left
            await self._stop_hosts(grace_s=JOIN_STOP_GRACE_S, hosts=[action.host],
                                   pool=self._reach(action.host))
        elif isinstance(action, ForgetJoin):
            forget_join_record(local_run_dir(self._cluster_config, self.run_id), action.host)
        elif isinstance(action, DeclareHung):
            if self._follower is not None:
                self._follower.declare_hung(action.hung)
        elif isinstance(action, LingerEnded):
            assert self._follower is not None
            self._follower.lingering_ended(action.waited_s)  # the run completed all the same
        elif isinstance(action, CloseTrackers):
            assert self._follower is not None
            return [*await self._follower.close_trackers(action.state)]
        return []

    def _reach(self, host: str) -> HostPool:
        """The connections that reach a joiner: the controller's, or for a host added to
        cluster.toml since the run was loaded, the cluster with it (a stop reaches it too)."""
        if host not in {h.name for h in self._cluster_config.hosts}:
            section = next(h for h in self.config.hosts if h.name == host)
            self._cluster_config = replace(self._cluster_config,
                                           hosts=(*self._cluster_config.hosts, section))
            if self._added_pool is not None:
                self._retired.append(self._added_pool)
            self._added_pool = HostPool(self._cluster_config)
        return self._added_pool if self._added_pool is not None else self._cluster_pool

    async def stop_wait(self, grace_s: float) -> tuple[float, str]:
        """How long a stop asked with ``grace_s`` waits before it KILLs (longer for a
        low-communication run: its round ends first, read from the master's host when this
        machine has no copy of it), and the line that says so ("" if none)."""
        return await stop_wait_on_hosts(self._cluster_config, self._cluster_pool, self.run_id,
                                        grace_s)

    async def stop(self, *, grace_s: float = 10.0, wait_s: float | None = None) -> StopReport:
        """TERM every host's process group, KILL after ``grace_s`` (longer for a
        low-communication run: ``stop_wait``; ``wait_s``: what it said already), verify
        nothing is left; before any launcher started, end what the check and the push started
        (``decide``'s ``launched_nothing``).

        A run that already ended (completed, failed, stopped) keeps its recorded outcome; what
        the stop found goes to the record's ``cleanup``. The stop is a signal (``StopAsked``)
        that ``decide`` answers with actions, like the follower's."""
        record = self._record.recorded()
        # Every host of the run, the dropped ones too (recorded as suspect hosts); the
        # controller's pool reaches them, this handle's only the hosts still in the run.
        known = {h.name for h in self._cluster_config.hosts}
        hosts = tuple(sorted(h for h in {*record.hosts, *record.suspect_hosts,
                                         *record.left_hosts} if h in known))
        found: dict[str, int] = {}  # a finished run's leftovers: counted, to say what ended
        if record.state in FINAL_RUN_STATES:
            found = await live_processes(self._cluster_config,
                                         self._added_pool or self._cluster_pool, record)
        grace_s = wait_s if wait_s is not None else (await self.stop_wait(grace_s))[0]
        asked = StopAsked(recorded=record.state, hosts=hosts, grace_s=grace_s,
                          following=self._follower is not None)
        self._asked_report = StopReport(run_id=self.run_id)
        async for _ in self._heard(asked):
            pass  # a stop asked says nothing by itself: the follower reports how it ended
        report = self._asked_report
        if record.state in FINAL_RUN_STATES:
            report = replace(report, outcome=RunOutcome(record.state), ended={
                h: n - report.remaining.get(h, 0) for h, n in found.items()
                if h not in report.unreachable and n > report.remaining.get(h, 0)})
        return report

    async def _user_stop(self, action: StopHosts | EndCommands) -> StopReport:
        """The user's stop on the hosts: the whole one, or before any launcher started, the end
        of what the check and the push started (``Transport.settle`` waits until each host
        confirmed it, ``END_WAIT_S`` at most; what a host never confirmed ended is reported)."""
        if isinstance(action, EndCommands):
            return StopReport(run_id=self.run_id, remaining=await self._pool.settle())
        return await self._stop_hosts(grace_s=action.grace_s, hosts=list(action.hosts or ()),
                                      pool=self._added_pool or self._cluster_pool)

    async def _stop_hosts(self, *, grace_s: float, hosts: list[str] | None = None,
                          pool: HostPool | None = None) -> StopReport:
        """The one way this handle stops the run's processes (``stop_run``: TERM, ``grace_s``,
        KILL, verified) on ``hosts`` (every host of the run by default), whatever ``decide``
        or ``stop`` asked it for."""
        if pool is None:  # a host added to cluster.toml since is reached by the added pool
            added = self._pool is self._cluster_pool and self._added_pool is not None
            pool = self._added_pool if added else self._pool
        return await stop_run(pool or self._pool, self.run_dir, self.run_id, grace_s=grace_s,
                              hosts=hosts)
