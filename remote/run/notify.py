"""``[notify]``: a run's moments told to people (apprise URLs, the terminal bell).

A consumer of the run's typed events on this machine, never on the ranks: ``NoticeRules``
decides which events make a notice (started, failed, finished, stopped, a host benched or
rejoined, a host joined or left, a checkpoint, throughput fallen for minutes, a stuck start);
``NoticeSender`` sends each on its own daemon thread, so a receiver that fails or never
answers costs the run nothing (it is named once in the run's log, and the end of the follow
waits at most ``timeout_s`` for the last notices). ``NotifyingHandle`` is the controller's run
handle with the two hooked onto its event stream, so ``corral run``, ``corral attach`` and the
console all send the same.

Secrets in a URL are written ``${NAME}`` and read from this machine's environment only when a
notice is sent: run.json, the logs and every command line hold the URL as written.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from figures import RunFigures
from profiles.user_errors import UsageError
from remote.checks.notify_urls import masked_list, resolved, url_problems
from remote.config.cluster import ClusterConfig
from remote.config.exports import NotifySection
from remote.events import FINAL_RUN_STATES, LogLine, RankEvent, RunEvent, RunStatus
from remote.hosts.pool import HostPool
from remote.records.runs import RunInfo
from remote.run.handle import SshRunHandle
from remote.run.hang import NO_FIRST_STEP
from trainer.events import CheckpointEvent, MembershipEvent, RebalanceEvent, StepEvent

SLOW_WINDOW = 5
"""Steps whose median is the cluster's current samples/s (one slow step is not a fall)."""
LEVELS = {"failed": "failure", "stuck": "failure", "slow": "warning", "benched": "warning",
          "left": "warning", "finished": "success"}
"""Each event's apprise notify type (a receiver's colour or priority); any other: ``info``."""
DAMPED = ("benched", "rejoined")
"""Events told at most once per host per ``[notify] bench_minutes``."""


@dataclass(frozen=True, kw_only=True)
class RunNotice:
    """One message to send."""

    event: str
    """Which of ``NOTIFY_EVENTS`` it is."""
    title: str
    body: str

    @property
    def level(self) -> str:
        """Its apprise notify type: ``failure``, ``warning``, ``success`` or ``info``."""
        return LEVELS.get(self.event, "info")


def secret_urls(section: NotifySection) -> list[str]:
    """The URLs with every ``${NAME}`` filled from the environment; a UsageError names the
    first variable that is not set."""
    return resolved(section.urls)


def load_apprise() -> Any:
    """apprise, imported only when ``[notify]`` has URLs (the ``notify`` extra)."""
    try:
        import apprise
    except ImportError:
        raise UsageError("[notify] urls need apprise: pip install 'corral[notify]'",
                         title="apprise missing") from None
    return apprise


class NoticeRules:
    """Which of a run's events make a notice, for the events ``[notify]`` names."""

    def __init__(self, section: NotifySection, run: str) -> None:
        self.section = section
        self.run = run
        """How notices name the run: its name and id."""
        self.figures = RunFigures()
        self.hosts: dict[int, str] = {}
        """Each rank's host, as its events came."""
        self.best = 0.0
        self.rated: dict[int, float] = {}
        """The last ``SLOW_WINDOW`` complete steps' samples/s, by step."""
        self.slow_since: float | None = None
        self.told_slow = False
        self.ended = False
        self.bench_told: dict[str, float] = {}
        """When each host's last benched/rejoined notice went (event time, s)."""
        self.checkpoint: CheckpointEvent | None = None
        """The newest checkpoint saved (``stopped`` names it)."""

    def observe(self, event: RunEvent) -> list[RunNotice]:
        """The notices ``event`` makes (most make none)."""
        notices = self._notices(event)
        return [n for n in notices if n.event in self.section.events]

    def _notices(self, event: RunEvent) -> list[RunNotice]:
        if isinstance(event, RunStatus):
            return self._status(event)
        if not isinstance(event, RankEvent):
            return []
        self.hosts[event.event.rank] = event.host
        self.figures.observe(event.event, event.host)
        if event.replayed:  # the record, replayed to a seat: its notices went when it happened
            return []
        if isinstance(event.event, CheckpointEvent):
            self.checkpoint = event.event
            return [RunNotice(event="checkpoint", title=f"{self.run}: checkpoint",
                              body=f"step {event.event.step} saved at {event.event.path}")]
        if isinstance(event.event, RebalanceEvent):
            return self._membership(event.event)
        if isinstance(event.event, MembershipEvent):
            return [self._generation(event.event)]
        if isinstance(event.event, StepEvent):
            return self._throughput(event.event.t)
        return []

    def _status(self, status: RunStatus) -> list[RunNotice]:
        if status.state == "running" and not self.figures.has_steps:
            return [RunNotice(event="started", title=f"{self.run} started",
                              body=f"run {status.run_id} is training")]
        if status.state not in FINAL_RUN_STATES or self.ended:
            return []
        self.ended = True
        if status.state == "completed":
            rate, wall = self.figures.mean_samples_per_s, self.figures.wall_s
            body = (f"{self.figures.steps_done} steps, "
                    + (f"{rate:.1f} samples/s" if rate is not None else "no samples/s measured")
                    + (f", {wall / 60:.1f} min" if wall is not None else ""))
            return [RunNotice(event="finished", title=f"{self.run} finished", body=body)]
        if status.state == "stopped":
            return [RunNotice(event="stopped", title=f"{self.run} stopped",
                              body=self._stopped_body(status.detail))]
        where = " ".join(part for part in (
            f"host {status.failed_host}" if status.failed_host else "",
            f"rank {status.failed_rank}" if status.failed_rank is not None else "") if part)
        stuck = NO_FIRST_STEP in status.detail and "stuck" in self.section.events
        title = f"{self.run} failed" + (f" on {where}" if where else "")
        return [RunNotice(event="stuck" if stuck else "failed", title=title,
                          body=status.detail or "failed")]

    def _stopped_body(self, detail: str) -> str:
        """``stopped``: why, at which step, the newest checkpoint and how long it ran."""
        saved = self.checkpoint
        wall = self.figures.wall_s
        return "; ".join(part for part in (
            detail or "stopped", f"at step {self.figures.steps_done}",
            f"newest checkpoint step {saved.step} ({saved.path})" if saved is not None
            else "no checkpoint saved",
            f"after {wall / 60:.1f} min" if wall is not None else "") if part)

    def _damped(self, host: str, t: float) -> bool:
        """True when ``host`` had a benched/rejoined notice within ``bench_minutes``."""
        told = self.bench_told.get(host)
        if told is not None and t - told < self.section.bench_minutes * 60:
            return True
        self.bench_told[host] = t
        return False

    def _membership(self, move: RebalanceEvent) -> list[RunNotice]:
        return [n for host, n in self._moves(move)
                if n.event not in self.section.events or not self._damped(host, move.t)]

    def _moves(self, move: RebalanceEvent) -> list[tuple[str, RunNotice]]:
        out = []
        for rank, (before, after) in enumerate(zip(move.previous, move.split, strict=False)):
            host = self.hosts.get(rank, "?")
            if before > 0 and after == 0:
                out.append((host, RunNotice(
                    event="benched", title=f"{self.run}: {host} sits out",
                    body=f"rank {rank} on {host} from step {move.step}: {move.reason}")))
            elif before == 0 and after > 0:
                out.append((host, RunNotice(
                    event="rejoined", title=f"{self.run}: {host} rejoined",
                    body=f"rank {rank} on {host} from step {move.step}: {move.reason}")))
        return out

    def _generation(self, change: MembershipEvent) -> RunNotice:
        """A host joined, was refused or left the running run (trainer/membership)."""
        hosts = ", ".join(change.hosts)
        if change.change == "left":
            why = f" ({change.cause})" if change.cause else ""
            return RunNotice(event="left", title=f"{self.run}: {hosts} left",
                             body=f"at step {change.step}{why}; {change.world_size} ranks go on"
                                  + (f": {change.reason}" if change.reason else ""))
        verb = "joined" if change.change == "joined" else "join refused"
        return RunNotice(event="joined", title=f"{self.run}: {hosts} {verb}",
                         body=f"at step {change.step}, {change.world_size} ranks"
                              + (f": {change.reason}" if change.reason else ""))

    def _throughput(self, t: float) -> list[RunNotice]:
        """``slow``: the median of the last steps' samples/s below the best by
        ``slow_percent`` for ``slow_minutes`` (once, until it recovers)."""
        if "slow" not in self.section.events:
            return []
        row = self.figures.latest_complete_row()  # a look at the newest rows: no full scan
        if row is None or row.samples_per_s is None or row.step in self.rated:
            return []
        self.rated[row.step] = row.samples_per_s
        while len(self.rated) > SLOW_WINDOW:
            del self.rated[min(self.rated)]
        rates = list(self.rated.values())
        if len(rates) < SLOW_WINDOW:
            return []
        now = sorted(rates)[len(rates) // 2]
        self.best = max(self.best, now)
        if now >= self.best * (1 - self.section.slow_percent / 100):
            self.slow_since, self.told_slow = None, False
            return []
        self.slow_since = t if self.slow_since is None else self.slow_since
        if self.told_slow or t - self.slow_since < self.section.slow_minutes * 60:
            return []
        self.told_slow = True
        return [RunNotice(event="slow", title=f"{self.run}: throughput fell",
                          body=f"{now:.1f} samples/s for {(t - self.slow_since) / 60:.0f} min, "
                               f"best {self.best:.1f}")]


class NoticeSender:
    """Sends each notice on its own daemon thread: the run never waits for a receiver."""

    def __init__(self, section: NotifySection) -> None:
        self.section = section
        self.urls = secret_urls(section)  # a missing secret: said before the run starts
        self.apprise: Any = load_apprise() if self.urls else None
        problems = url_problems(self.apprise, section.urls, self.urls) if self.urls else []
        if problems:  # said before the run starts, not at its first notice hours later
            raise UsageError("; ".join(problems), title="notify URL invalid")
        self.threads: list[threading.Thread] = []
        self.warnings: list[str] = []
        self.warned = False
        self.lock = threading.Lock()

    def send(self, notice: RunNotice) -> None:
        """Ring the bell and start sending ``notice``; returns at once."""
        if self.section.bell and sys.__stderr__ is not None and sys.__stderr__.isatty():
            sys.__stderr__.write("\a")
            sys.__stderr__.flush()
        if not self.urls:
            return
        thread = threading.Thread(target=self._deliver, args=(notice, time.monotonic()),
                                  name="corral-notify", daemon=True)
        thread.start()
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]

    def _deliver(self, notice: RunNotice, began: float) -> None:
        failed = [(written, problem) for written, url in zip(self.section.urls, self.urls,
                                                              strict=True)
                  if (problem := self._deliver_one(url, notice)) is not None]
        if failed:  # each URL sent alone: the one that failed is named, not every one
            self._warn(f"[notify] the {notice.event} notice was not sent to "
                       f"{masked_list([w for w, _ in failed])}: {failed[0][1]}")
        elif time.monotonic() - began > self.section.timeout_s:
            self._warn(f"[notify] the {notice.event} notice took over "
                       f"{self.section.timeout_s:g} s (urls as written: "
                       f"{masked_list(self.section.urls)})")

    def _deliver_one(self, url: str, notice: RunNotice) -> str | None:
        """Why ``notice`` did not reach ``url``; None when it did."""
        try:
            sent = self.apprise.Apprise([url]).notify(body=notice.body, title=notice.title,
                                                      notify_type=notice.level)
        except Exception as exc:  # a notifier's fault is never the run's
            return f"{type(exc).__name__}"
        return None if sent else "the receiver refused it or could not be reached"

    def _warn(self, line: str) -> None:
        with self.lock:
            if not self.warned:  # once: a dead receiver is named, not repeated every notice
                self.warned = True
                self.warnings.append(line)

    def take_warnings(self) -> list[str]:
        """What went wrong since the last call (at most one line per run)."""
        with self.lock:
            lines, self.warnings = self.warnings, []
        return lines

    def drain(self) -> None:
        """Wait, at most ``timeout_s`` in all, for the notices still being sent."""
        deadline = time.monotonic() + self.section.timeout_s
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self.threads):
            self._warn(f"[notify] a receiver did not answer within {self.section.timeout_s:g} "
                       f"s (urls as written: {masked_list(self.section.urls)})")


async def notified(stream: AsyncIterator[RunEvent], rules: NoticeRules,
                   sender: NoticeSender) -> AsyncIterator[RunEvent]:
    """``stream`` unchanged, each event's notices sent as it passes, a failing receiver said
    once as a log line; at its end the last notices get ``timeout_s`` to leave."""
    import asyncio

    try:
        async for event in stream:
            for notice in rules.observe(event):
                sender.send(notice)
            yield event
            for line in sender.take_warnings():
                yield LogLine(t=time.time(), host="*", rank=None, text=line)
    finally:
        await asyncio.to_thread(sender.drain)


class NotifyingHandle(SshRunHandle):
    """``SshRunHandle`` whose events also reach ``[notify]`` (the controller hands these out).

    A run that had ended before it was attached sends nothing: its notices went when it
    ended."""

    def __init__(self, config: ClusterConfig, pool: HostPool, info: RunInfo, *, launch: bool,
                 **rest: Any) -> None:
        super().__init__(config, pool, info, launch=launch, **rest)
        ended = not launch and info.state in FINAL_RUN_STATES
        section = config.notify
        self._notices: tuple[NoticeRules, NoticeSender] | None = None
        if section.enabled and not ended:
            label = f"{info.name} ({info.run_id})" if info.name else info.run_id
            self._notices = (NoticeRules(section, label), NoticeSender(section))

    def events(self) -> AsyncIterator[RunEvent]:
        """``SshRunHandle.events``, each passing through ``[notify]``."""
        stream = super().events()
        return stream if self._notices is None else notified(stream, *self._notices)


def send_test(config: ClusterConfig) -> list[str]:
    """``corral notify --test``: one notice to every URL, waited for; what went wrong."""
    section = config.notify
    if not section.enabled:
        raise UsageError(f"{config.path.name} has no [notify] urls: add urls = [\"...\"] "
                         "(apprise URLs) under [notify]", title="nothing to notify")
    sender = NoticeSender(section)
    sender.send(RunNotice(event="test", title=f"corral: {config.cluster.name}",
                          body="a test notice from corral notify --test"))
    sender.drain()
    return sender.take_warnings()
