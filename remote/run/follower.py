"""Following one launch of a run to its end: the merged tails, what they mean, how it ended.

``RunFollower`` is the ``running`` phase of one attempt of ``SshRunHandle.events``: it opens a
tail per host, feeds every item to the ``RunMonitor`` (and the hang guard), and reports to the
lifecycle loop what it sees: ``TailsOpen``, then facts with the time they were seen
(``remote/run/follow_facts.py``: a host failed, the cause is known, a rank is silent past the
hang limit, every rank finished, and a ``Tick`` as time passes), and finally ``AttemptEnded``:
how the attempt ended as the monitor found it and which hosts were lost. It decides nothing on
the clock: the loop's ``decide`` keeps the deadlines (when a failure's cause is settled, the
hot path's wait, a hang declared: ``declare_hung``, lingering processes: ``lingering_ended``).
It starts no stop of its own: the loop decides every one (``remote/run/decide.py``) and makes
it (``SshRunHandle._stop_hosts``), and closes its trackers with the outcome it decided
(``close_trackers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig, HostSection
from remote.config.read import load_cluster
from remote.config.task_code import UserCode, user_code
from remote.events import HostStatus, LogLine, RankEvent, RunEvent
from remote.hosts.missing_file import explain_missing
from remote.hosts.pool import HostPool
from remote.records.collected import CollectedCopy
from remote.records.replay import RecordReplay
from remote.records.runs import RunInfo, local_run_dir, run_dir_for
from remote.records.scalars import feed_copies
from remote.records.tensorboard import live_writer
from remote.records.tracking import Trackers, live_trackers
from remote.run.decide_members import hot_path_refusal
from remote.run.failures import Failure, HostLost
from remote.run.follow_facts import (
    AllRanksDone,
    CauseKnown,
    Fact,
    FailureGone,
    FailureSeen,
    HangSeen,
    Tick,
)
from remote.run.hang import HangGuard
from remote.run.join import read_join_records
from remote.run.lifecycle import (
    AttemptEnded,
    JoinEnded,
    JoinLaunched,
    MembershipSeen,
    StopRequest,
    TailsOpen,
)
from remote.run.monitor import RunMonitor
from remote.run.reconnect import resilient_tail
from remote.run.run_written import RunWritten
from remote.run.stream import LauncherExit, MergedTails, RankOwned, TailFailed, TailItem
from trainer.events import MembershipEvent, StartEvent

FollowItem = (RunEvent | TailsOpen | Fact | AttemptEnded | MembershipSeen | JoinLaunched
              | JoinEnded)


class _Tick:
    """Internal: lets the follow loop act on time passing while the hosts are quiet."""


async def _ticker(every: float = 0.5) -> AsyncIterator[TailItem]:
    while True:
        await asyncio.sleep(every)
        yield _Tick()  # type: ignore[misc]


def missing_file_explainer(config: ClusterConfig, user: UserCode | None = None,
                           written: RunWritten | None = None
                           ) -> Callable[[str], str | None] | None:
    """For a script run: what explains a failure's ``FileNotFoundError``: a file another
    host's rank of this run wrote (``written``), else one the launch folder holds and did not
    send (``explain_missing``); None for a task run. ``user``: the launch's user code, located
    once per launch (``Launch.user``); an attached run, launched elsewhere, locates its own."""
    if config.run.script is None:
        return None
    if user is None:
        user = user_code(config.run, config.path.parent)
    folder, data = (user.folder, config.run.data) if user is not None else (None, False)

    def explain(text: str) -> str | None:
        found = written.explain(text) if written is not None else None
        if found is None and folder is not None:
            found = explain_missing(folder, data, text)
        return found

    return explain


class RunFollower:
    """One attempt of a run, followed from its hosts' tails to its final ``RunStatus``.

    ``launching`` is true for the process that launched the run: only it declares hangs (and
    only its loop stops hosts: attaching is read-only)."""

    def __init__(self, config: ClusterConfig, pool: HostPool, info: RunInfo, *,
                 launching: bool, stop: StopRequest,
                 record_error: Callable[[], str | None] = lambda: None,
                 user: UserCode | None = None, replay: RecordReplay | None = None) -> None:
        self.config = config
        self.pool = pool
        self.info = info
        self.run_id = info.run_id
        self.run_dir = run_dir_for(config, info.run_id)
        self.launching = launching
        self.written = (RunWritten(config, self.run_dir, info.started, self._ranks_of)
                        if config.run.script is not None else None)
        written = self.written
        self.monitor = RunMonitor(run_id=info.run_id, hosts=info.hosts, stop=stop,
                                  run_dir=self.run_dir,
                                  explain=missing_file_explainer(config, user, written))
        self.hang = HangGuard(pool, config.run.hang_factor, config.run.hang_limit)
        self.running_hosts: set[str] = set()
        self.failing_said: set[str] = set()
        """The failing hosts reported (``FailureSeen``)."""
        self.cause_said = False
        """``CauseKnown`` was reported (once a failure)."""
        self.done_said = False
        """``AllRanksDone`` was reported (once an attempt)."""
        self.trackers: Trackers | None = None
        """The run's trackers while this attempt is followed (closed by ``close_trackers``)."""
        self.record_error = record_error
        """Why this machine could not write the run's ``run.json`` (None while it can)."""
        self.local_dir = local_run_dir(config, info.run_id)
        self.copies: dict[str, CollectedCopy] = {}
        """Each followed host's local copy (a joiner's added when it is followed)."""
        self.tails: MergedTails | None = None
        self.joining: set[str] = set()
        """Hosts ``corral join`` launched, followed, not let in yet (``add_joiner``)."""
        self.joins_seen: set[tuple[str, int]] = set()
        """The join records already reported (host, launcher's process group)."""
        self.replay = replay if replay is not None else RecordReplay(self.local_dir)
        """The run's record as the handle replayed it: this attempt first yields what its
        copies hold beyond it (``RecordReplay.take``), then the tails go on from there."""

    async def events(self) -> AsyncIterator[FollowItem]:
        """Every event of this attempt and what the lifecycle loop acts on, ending with
        ``AttemptEnded``."""
        local_dir = self.local_dir
        copies = self.copies = {h: CollectedCopy(local_dir, h) for h in self.info.hosts}
        board = live_writer(local_dir, copies.values())
        trackers = self.trackers = live_trackers(self.config, self.info, local_dir,
                                                 copies.values())
        feed_copies(copies.values(), [w for w in (board, *trackers.writers) if w is not None])
        sources: list[tuple[str, AsyncIterator[TailItem]]] = [("", _ticker())]
        try:
            for kept in self.replay.take({h: c.saved for h, c in copies.items()}):
                yield RankEvent(host=kept.host, event=kept.event, replayed=True)
            try:
                async for event in self._open_tails(copies, sources):
                    yield event
                yield TailsOpen()
                self.tails = MergedTails(sources)
                # Closed here, not when the loop is left and the generator collected: its
                # readers' end is awaited before the attempt ends, never left to the loop's end.
                async with contextlib.aclosing(self._merged(self.tails)) as items:
                    async for item in items:
                        for line in trackers.take_warnings():
                            yield LogLine(t=time.time(), host="*", rank=None, text=line)
                        for joined in self._joins(item):
                            yield joined
                        for event in await self._take(item):
                            yield event
                            if isinstance(event, RankEvent) and isinstance(event.event,
                                                                           MembershipEvent):
                                yield MembershipSeen(event.event)  # the loop records it
                        self._local_writes(copies.values())
                        if self.monitor.finished:
                            for host in sorted(self.joining):  # its processes are stopped
                                yield JoinEnded(host=host, running=True, detail=(
                                    "the run ended before rank 0 let it in"))
                            break
                        for fact in self.facts(item):
                            yield fact
            finally:
                self.hang.close()
                if self.written is not None:
                    self.written.close()
                for host, copy in self.copies.items():
                    copy.close()
                    self.replay.shown(host, copy.saved)
                if board is not None:
                    try:
                        board.close()
                    except OSError as exc:  # its last steps: the run is over, say why
                        self.monitor.local_write_failed(f"{exc.filename}: {exc.strerror}")
                self._local_writes(copies.values())
            yield self._ended()  # the loop decides, and closes the trackers
        finally:
            if self.trackers is not None:  # cut short before the loop decided: goes on later
                self.trackers.close(None)

    @staticmethod
    async def _merged(tails: MergedTails) -> AsyncGenerator[TailItem | TailFailed, None]:
        async with contextlib.aclosing(tails.items()) as items:
            async for item in items:
                yield item

    def _ranks_of(self, host: str) -> list[int]:
        """The ranks of ``host`` known so far."""
        return sorted(r for r, h in self.monitor.rank_host.items() if h == host)

    def _joins(self, item: TailItem | TailFailed) -> list[JoinLaunched | JoinEnded]:
        """What ``corral join`` did since the last look (its new join records), and a
        joiner's launcher that ended (or its host lost) before rank 0 let it in."""
        said: list[JoinLaunched | JoinEnded] = []
        host = getattr(item, "host", None)
        if host in self.joining and isinstance(item, (LauncherExit, TailFailed)):
            self.joining.discard(host)
            said.append(JoinEnded(host=host, detail=(
                f"its launcher ended with status {item.status}" if isinstance(item, LauncherExit)
                else f"its host was lost: {item.error}")))
        if isinstance(item, _Tick):
            for record in read_join_records(self.local_dir):
                if (record.host, record.pgid) not in self.joins_seen:
                    self.joins_seen.add((record.host, record.pgid))
                    said.append(JoinLaunched(host=record.host, pgid=record.pgid,
                                             asked=record.asked,
                                             section=self._new_section(record.host)))
        return said

    def _new_section(self, host: str) -> HostSection | None:
        """``host``'s entry in cluster.toml as it is now, when the cluster this run was
        followed with has none (a host added to the file while the run trains)."""
        if host in {h.name for h in (*self.pool.config.hosts, *self.config.hosts)}:
            return None
        try:
            now = load_cluster(self.config.path)
        except CorralError:
            return None
        return next((h for h in now.hosts if h.name == host), None)

    def add_joiner(self, host: str, pool: HostPool) -> None:
        """Follow ``host``, which ``corral join`` launched (``TailJoiner``): its tail joins the
        others'; until rank 0 lets it in (``members_changed``), its end is a failed join."""
        if self.tails is None or host in self.joining:
            return
        if (before := self.copies.get(host)) is not None:  # it left and joins again: its
            before.save()  # first copy lets go, or the new one could not write (one writer)
            before.close()
            self.replay.shown(host, before.saved)
        copy = self.copies[host] = CollectedCopy(self.local_dir, host)
        self.joining.add(host)
        self.running_hosts.add(host)  # "running" is said when rank 0 lets it in
        self.monitor.members_changed(frozenset({host}), frozenset())
        self.tails.add(host, resilient_tail(pool, host, self.run_dir, copy,
                                            self.config.ssh.lost_after))

    async def _take(self, item: TailItem | TailFailed | HostStatus) -> list[RunEvent]:
        """What one item of the merged tails means: its events."""
        if isinstance(item, HostStatus):  # a connection lost or found again
            self.hang.host_reachable(item.host, item.state != "unreachable", time.monotonic())
            return [item]
        seen: TailItem | HostLost
        if isinstance(item, TailFailed):  # its tail gave up: the host is lost
            await self.pool.drop(item.host)  # forget the dead connection so stop can reconnect
            seen = self.monitor.lost(item.host, item.error)
            self.hang.host_reachable(item.host, False, time.monotonic())
        else:
            seen = item
        return self._observe(seen)

    def _local_writes(self, copies: Iterable[CollectedCopy]) -> None:
        """This machine failing to write the run's copy, TensorBoard or record ends the run
        (the loop stops the hosts once its cause is settled), never a host called lost for it."""
        for error in [*(c.write_error for c in copies), self.record_error()]:
            if error is not None and self.launching:
                self.monitor.local_write_failed(error)
                return

    async def close_trackers(self, state: str) -> list[LogLine]:
        """End the trackers' run with ``state``, the outcome the loop decided; what they said."""
        trackers, self.trackers = self.trackers, None
        if trackers is None:
            return []
        trackers.close(state)
        await asyncio.to_thread(trackers.wait)
        return [LogLine(t=time.time(), host="*", rank=None, text=line)
                for line in trackers.take_warnings()]

    async def _open_tails(self, copies: dict[str, CollectedCopy],
                          sources: list[tuple[str, AsyncIterator[TailItem]]],
                          ) -> AsyncIterator[RunEvent]:
        """One resilient tail per reachable host, added to ``sources``."""
        for host in self.info.hosts:
            try:
                await self.pool.get(host)
            except CorralError as exc:
                if not self.launching:
                    raise  # attaching changes nothing on the hosts: report, leave the run be
                self.monitor.observe(self.monitor.lost(host, exc))
                yield HostStatus(t=time.time(), host=host, state="unreachable", detail=str(exc))
                continue
            sources.append((host, resilient_tail(self.pool, host, self.run_dir, copies[host],
                                                 self.config.ssh.lost_after)))

    def _observe(self, item: TailItem | HostLost) -> list[RunEvent]:
        """The monitor's events for ``item``; a host's first start event marks it running."""
        now = time.monotonic()
        events: list[RunEvent] = []
        if isinstance(item, RankOwned) and item.host not in self.running_hosts:
            # The rendezvous placed ranks there: running, even for a script writing no events.
            self.running_hosts.add(item.host)
            events.append(HostStatus(t=time.time(), host=item.host, state="running"))
        for event in self.monitor.observe(item):
            if isinstance(event, RankEvent):
                self.hang.observe(event, now)
            elif isinstance(event, LogLine) and event.rank is not None and self.written is not None:
                self.written.heard(self.pool, event.text)  # a path it may not find
            if (isinstance(event, RankEvent) and isinstance(event.event, StartEvent)
                    and event.host not in self.running_hosts):
                self.running_hosts.add(event.host)
                events.append(HostStatus(t=time.time(), host=event.host, state="running"))
            events.append(event)
        return events

    def members_changed(self, left: frozenset[str], joined: frozenset[str]) -> None:
        """Hosts left the run live, or joined it (``MembersChanged``): the monitor and the
        hang guard forget the ones that left; a failure of theirs being waited on is none."""
        self.monitor.members_changed(left, joined)
        self.joining -= joined
        self.hang.watch.forget(left)

    def lingering_ended(self, waited_s: float) -> None:
        """The loop ends the processes that linger ``waited_s`` after every rank finished: the
        run completed, their exits say nothing more."""
        self.monitor.end_lingering(waited_s)

    def declare_hung(self, hung: Failure) -> None:
        """The loop declared ``hung`` (a ``HangSeen``): a failure of the attempt."""
        self.monitor.declare_hung(hung)

    def facts(self, item: object) -> list[FollowItem]:
        """What changed with ``item``, as facts stamped now; a ``Tick`` after any of them and
        on the clock's ticks (the loop's deadlines pass on it). The hang guard's lines too."""
        monitor, t = self.monitor, time.time()
        lines, hung = self.hang.check(time.monotonic())
        facts: list[FollowItem] = [LogLine(t=t, host="*", rank=None, text=line)
                                   for line in lines]
        if hung is not None and not monitor.failing:
            facts.append(HangSeen(hung, t))
        failing = {f.host for f in monitor.failures}
        for host in sorted(failing - self.failing_said):
            hot = self.launching and hot_path_refusal(self.config, self.info, host) is None
            facts.append(FailureSeen(host, t, hot_path=hot))
        if self.failing_said and not failing:
            facts.append(FailureGone(t))
            self.cause_said = False
        self.failing_said = failing
        if failing and not self.cause_said and monitor.cause_settled():
            self.cause_said = True
            facts.append(CauseKnown(t))
        if not failing and not self.done_said and monitor.all_completed:
            self.done_said = True
            facts.append(AllRanksDone(t))
        if facts or isinstance(item, _Tick):
            running = tuple(h for h in self.info.hosts if h not in monitor.exited)
            facts.append(Tick(t, running=running, cause=monitor.first_failure()))
        return facts

    def _ended(self) -> AttemptEnded:
        """How the attempt ended as this follower saw it."""
        return AttemptEnded(final=self.monitor.finding(), lost=dict(self.monitor.dropped))
