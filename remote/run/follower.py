"""Following one launch of a run to its end: the merged tails, the failure stop, the outcome.

``RunFollower`` is the ``running`` phase of one attempt of ``SshRunHandle.events``: it opens a
tail per host, feeds every item to the ``RunMonitor`` (and the hang guard), and reports to the
lifecycle loop what it sees: ``TailsOpen``, ``CauseSettled`` once a failure's cause is known
(the loop then moves to ``stopping`` and calls ``stop_others``), and finally ``AttemptEnded``:
the attempt's final status, what the stop found, which hosts were lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig
from remote.events import (
    FINAL_RUN_STATES,
    HostStatus,
    LogLine,
    RankEvent,
    RunEvent,
    StopReport,
)
from remote.hosts.pool import HostPool
from remote.records.collected import CollectedCopy
from remote.records.runs import (
    RunInfo,
    describe_stop,
    local_run_dir,
    run_dir_for,
)
from remote.records.scalars import feed_copies
from remote.records.tensorboard import live_writer
from remote.records.tracking import live_trackers
from remote.run.failures import HostLost
from remote.run.hang import HangGuard
from remote.run.lifecycle import AttemptEnded, CauseSettled, RunOutcome, StopRequest, TailsOpen
from remote.run.monitor import RunMonitor
from remote.run.reconnect import resilient_tail
from remote.run.stop import stop_run
from remote.run.stream import RankOwned, TailItem, merged
from trainer.events import StartEvent

FAILURE_SETTLE_S = 10.0
"""After the first failure, wait at most this long for the report that names its cause before
stopping the other hosts (a peer's error often arrives before the killed rank's launcher
reports it); ``RunMonitor.cause_settled`` usually ends the wait much earlier."""
STOP_GRACE_ON_FAILURE_S = 5.0
DONE_GRACE_S = 60.0
"""Seconds after every rank's completed ``end`` event before processes that have not exited are
ended (the run still completed): time for a script to save its model after training."""

FollowItem = RunEvent | TailsOpen | CauseSettled | AttemptEnded


class _Tick:
    """Internal: lets the follow loop act on time passing while the hosts are quiet."""


async def _ticker(every: float = 0.5) -> AsyncIterator[TailItem]:
    while True:
        await asyncio.sleep(every)
        yield _Tick()  # type: ignore[misc]


class RunFollower:
    """One attempt of a run, followed from its hosts' tails to its final ``RunStatus``.

    ``launching`` is true for the process that launched the run: only it stops hosts, declares
    hangs and cleans up after a failure (attaching is read-only)."""

    def __init__(self, config: ClusterConfig, pool: HostPool, info: RunInfo, *,
                 launching: bool, stop: StopRequest) -> None:
        self.config = config
        self.pool = pool
        self.info = info
        self.run_id = info.run_id
        self.run_dir = run_dir_for(config, info.run_id)
        self.launching = launching
        self.monitor = RunMonitor(run_id=info.run_id, hosts=info.hosts, stop=stop,
                                  run_dir=self.run_dir)
        self.hang = HangGuard(pool, config.run.hang_factor, config.run.hang_limit)
        self.failed_at: float | None = None
        self.cause_settled = False
        self.stop_task: asyncio.Task[StopReport] | None = None
        self.running_hosts: set[str] = set()
        self.done_since: float | None = None
        """When (monotonic) every rank had written a completed ``end`` event."""

    async def events(self) -> AsyncIterator[FollowItem]:
        """Every event of this attempt and what the lifecycle loop acts on, ending with
        ``AttemptEnded``."""
        local_dir = local_run_dir(self.config, self.run_id)
        copies = {h: CollectedCopy(local_dir, h) for h in self.info.hosts}
        board = live_writer(local_dir, copies.values())
        trackers = live_trackers(self.config, self.info, local_dir, copies.values())
        feed_copies(copies.values(), [w for w in (board, *trackers.writers) if w is not None])
        sources: list[tuple[str, AsyncIterator[TailItem]]] = [("", _ticker())]
        followed = False
        try:
            async for event in self._open_tails(copies, sources):
                yield event
            yield TailsOpen()
            async for item in merged(sources):
                for line in trackers.take_warnings():
                    yield LogLine(t=time.time(), host="*", rank=None, text=line)
                if isinstance(item, HostStatus):  # a connection lost or found again
                    self.hang.host_reachable(item.host, item.state != "unreachable",
                                             time.monotonic())
                    yield item
                    continue
                seen: TailItem | HostLost
                if isinstance(item, tuple):  # its tail gave up: the host is lost
                    host, error = item
                    # Forget the dead connection so stop can reconnect.
                    await self.pool.drop(host)
                    seen = self.monitor.lost(host, error)
                    self.hang.host_reachable(host, False, time.monotonic())
                else:
                    seen = item
                for event in self._observe(seen):
                    yield event
                if self.monitor.finished:
                    break
                for signal in self._after_failure():
                    yield signal
            followed = True
        finally:
            self.hang.close()
            for copy in copies.values():
                copy.close()
            if board is not None:
                board.close()
            if not followed:  # cut short (the console or `corral run` ended): goes on later
                trackers.close(None)
        try:
            ended = await self._settle()
        except BaseException:
            trackers.close(None)
            raise
        trackers.close(ended.final.state)
        await asyncio.to_thread(trackers.wait)
        for line in trackers.take_warnings():
            yield LogLine(t=time.time(), host="*", rank=None, text=line)
        yield ended

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
            if (isinstance(event, RankEvent) and isinstance(event.event, StartEvent)
                    and event.host not in self.running_hosts):
                self.running_hosts.add(event.host)
                events.append(HostStatus(t=time.time(), host=event.host, state="running"))
            events.append(event)
        return events

    def _lingering(self) -> list[FollowItem]:
        """Every rank done but some process still running after ``DONE_GRACE_S`` (a script's
        own teardown hanging, as Hugging Face scripts may on gloo): end them, said once."""
        monitor = self.monitor
        if (not self.launching or self.stop_task is not None or monitor.failing
                or not monitor.all_completed):
            return []
        now = time.monotonic()
        self.done_since = self.done_since if self.done_since is not None else now
        if now - self.done_since < DONE_GRACE_S:
            return []
        left = tuple(h for h in self.info.hosts if h not in monitor.exited)
        monitor.end_lingering(now - self.done_since)
        self.stop_others(left)
        return [LogLine(t=time.time(), host="*", rank=None, text=(
            f"every rank finished {DONE_GRACE_S:.0f} s ago but processes on "
            f"{', '.join(left)} have not exited; ending them (the run completed)"))]

    def _after_failure(self) -> list[FollowItem]:
        """Hangs named; after a failure, once its cause is known, ``CauseSettled`` (once)."""
        monitor = self.monitor
        if (lingering := self._lingering()):
            return lingering
        lines, hung = self.hang.check(time.monotonic())
        events: list[FollowItem] = [LogLine(t=time.time(), host="*", rank=None, text=line)
                                    for line in lines]
        if hung is not None and not monitor.failing and self.launching:
            monitor.declare_hung(hung)
        if monitor.failing and self.failed_at is None:
            self.failed_at = time.monotonic()
            if not self.launching:
                events.append(LogLine(t=time.time(), host="*", rank=None, text=(
                    "a rank failed; following changes nothing on the hosts: the "
                    "process that launched the run stops the rest, or end it with "
                    f"`corral stop {self.run_id}`")))
        if (self.failed_at is not None and not self.cause_settled
                and (monitor.cause_settled()
                     or time.monotonic() - self.failed_at >= FAILURE_SETTLE_S)):
            self.cause_settled = True
            left = tuple(h for h in self.info.hosts if h not in monitor.exited)
            events.append(CauseSettled(cause=monitor.first_failure(), left=left))
        return events

    def stop_others(self, hosts: tuple[str, ...]) -> None:
        """Stop ``hosts`` in the background (the lifecycle loop decided to, after a failure);
        the attempt ends once their launchers report it."""
        self.stop_task = asyncio.create_task(stop_run(
            self.pool, self.run_dir, self.run_id, grace_s=STOP_GRACE_ON_FAILURE_S,
            hosts=list(hosts)))

    async def _settle(self) -> AttemptEnded:
        """How the attempt ended: what the stop found, suspects recorded."""
        monitor = self.monitor
        final = monitor.finding()
        report: StopReport | None = None
        if self.stop_task is not None:
            report = await self.stop_task
            if not report.clean:
                final = replace(final, detail=final.detail + f"\n({describe_stop(report)})")
        elif final.state == "failed" and self.launching:
            # Every launcher ended by itself; make sure no straggler rank is left either.
            # (Only the process that launched the run does this: attaching is read-only.)
            report = await stop_run(self.pool, self.run_dir, self.run_id,
                                    grace_s=STOP_GRACE_ON_FAILURE_S)
        # Lost hosts cannot be reached to stop: with on_host_loss they are dropped anyway.
        lost = dict(monitor.dropped)
        stop_clean = report is None or (
            not any(report.remaining.values()) and set(report.unreachable) <= set(lost))
        # Hosts cut off when the run ended may still run its processes: status looks again.
        suspect = set(monitor.dropped)
        if report is not None:
            suspect = (suspect - set(report.remaining)) | set(report.unreachable) | {
                h for h, n in report.remaining.items() if n}
        if not self.launching and self.info.state in FINAL_RUN_STATES:
            # The run had ended before this follower came: its outcome was decided then (the
            # launching follower saw every event; this one only the ones after its copy).
            final = replace(final, outcome=RunOutcome(self.info.state),
                            detail=self.info.detail or final.detail)
        return AttemptEnded(final=final, lost=lost, stop_clean=stop_clean, suspects=suspect)
