"""Decide how a run ends from what its hosts report.

The run has ended when every host's launcher has ended (or its host dropped). It completed when
every launcher exited 0. Otherwise the first failing host and rank are named: a rank that died
without writing its ``end`` event (killed, crashed), then a host that dropped, are the cause
over ranks that ended ``failed`` because a peer vanished; a rank stuck at its start while it
waited for others (``WAITING_STATUS``) blames the ranks it names as holding it up (its own exit
ranks below them); among equals the earliest wins. The
last log lines of that rank (or host) go into the detail, and hosts that never joined the
rendezvous (no ``start`` event and no rendezvous result in their launcher log) are named.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from remote.events import TRAINED_NOTHING, HostStatus, LogLine, RankEvent, RunEvent
from remote.records.culprit import fold_frames
from remote.records.disk_full import LOCAL
from remote.records.history import LINES_READ, RANK_LINES_KEPT
from remote.run.failures import Cause, Failure, HostLost, Severity
from remote.run.lifecycle import Finding, RunOutcome, StopCause, StopRequest
from remote.run.root_cause import root_cause
from remote.run.stream import LauncherExit, RankOwned, TailItem
from trainer.disk_full import disk_full_on
from trainer.events import EndEvent, StartEvent, StepEvent
from trainer.launch_contract import DISK_FULL_EXIT, HELD_UP_LINE, WAITING_STATUS

LOG_LINES_KEPT = LINES_READ
"""Log lines per rank and per host kept to explain a failure (``RANK_LINES_KEPT`` of them
shown once runpy's and corral's frames are folded, as the report lists)."""
LAST_LINES_SHOWN = 3
"""Lines per rank quoted when a run trained nothing."""
DISK_FULL_STATUS = "diskfull"
"""The tailer's launcher status for a launcher that failed or vanished on a full disk
(``remote.run.tail_script``)."""
KILLED_STATUSES = {"gone": "vanished without an exit status (killed with its process group)",
                   "137": "was killed (SIGKILL, status 137)",
                   "143": "was killed (SIGTERM, status 143)"}
"""Launcher statuses that say the launcher itself (or its container) was killed, as the
tailer reports them when no rank of the host is named (``remote.run.tail_script``)."""
EXIT_ONLY = re.compile(r"^failed: exited with status -?\d+$")
"""A rank's end that names only its exit status (a script that printed its traceback and
exited later): its traceback's last line, when it printed one, says more."""
TRACEBACK_END = re.compile(
    r"^(\[rank\d+\]:\s*)?([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(:.*)?)$")
"""The last line of a Python traceback (``ValueError: ...``, after the ``[rankN]:`` torch puts
before a rank's uncaught error): what a crashed rank died of."""


@dataclass(kw_only=True)
class RunMonitor:
    """Tracks every host of one run and finds how its attempt ended (a
    ``Finding``: the lifecycle decides the run's state from it)."""

    run_id: str
    hosts: tuple[str, ...]
    run_dir: str = "the run directory"
    """``<run_root>/<run_id>`` as the hosts see it (a failure names it)."""
    stop: StopRequest = field(default_factory=StopRequest)
    """The run's stop request (shared with its handle): failures after a stop began are its
    consequences, not causes."""
    explain: Callable[[str], str | None] | None = None
    """Given a failure's words, one line more that explains it (a file the script could not
    open that the launch folder holds but did not send: ``remote.hosts.missing_file``)."""
    exited: dict[str, LauncherExit] = field(default_factory=dict)
    dropped: dict[str, HostLost] = field(default_factory=dict)
    last_step: dict[str, int] = field(default_factory=dict)
    """Host -> the newest step any of its ranks reported."""
    started_hosts: set[str] = field(default_factory=set)
    ended: dict[int, EndEvent] = field(default_factory=dict)
    rank_host: dict[int, str] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    stopped_hosts: set[str] = field(default_factory=set)
    """Hosts whose launcher ended because ``corral stop`` stopped it."""
    _rank_logs: dict[int, deque[str]] = field(default_factory=dict)
    _bars: dict[int, str] = field(default_factory=dict)
    """Rank -> its newest progress bar state (kept once, at its last state)."""
    _host_logs: dict[str, deque[str]] = field(default_factory=dict)
    _root_rank: dict[str, int] = field(default_factory=dict)
    _root_exit: dict[str, int] = field(default_factory=dict)
    _held_up_by: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """Rank -> the ranks it said held its start up (``HELD_UP_LINE``) before it exited."""
    after_done: list[str] = field(default_factory=list)
    """Ranks killed by a signal after their completed ``end`` (a script's teardown aborting,
    as ``terminate called without an active exception`` on gloo): noted, not failures."""
    ended_after_done: float | None = None
    """Seconds every rank had been done for when corral ended the processes that lingered
    (``end_lingering``); None while they exit by themselves."""
    left: set[str] = field(default_factory=set)
    """Hosts that left the run live (``members_changed``): what they report next is no
    failure, and the run no longer waits for them."""

    @property
    def finished(self) -> bool:
        """True once every host's launcher has ended or its host dropped (or left)."""
        return all(h in self.exited or h in self.dropped or h in self.left for h in self.hosts)

    def members_changed(self, left: frozenset[str], joined: frozenset[str]) -> None:
        """Hosts ``left`` the run live (the survivors went on: their failures are none of
        the run's), ``joined`` hosts are in it."""
        self.left = (self.left | left) - joined
        self.hosts = (*self.hosts, *(h for h in sorted(joined) if h not in self.hosts))
        self.failures = [f for f in self.failures if f.host not in self.left]
        for rank in [r for r, h in self.rank_host.items() if h in self.left]:
            del self.rank_host[rank]
            self.ended.pop(rank, None)

    @property
    def failing(self) -> bool:
        """True once anything failed (the other hosts should then be stopped)."""
        return bool(self.failures)

    @property
    def all_completed(self) -> bool:
        """True once every rank of every host has written a completed ``end`` event (ranks
        known from the rendezvous or their events), whether or not its process has exited."""
        ranks_known = {h for h in self.rank_host.values()} >= set(self.hosts) - self.left
        return ranks_known and all(
            r in self.ended and self.ended[r].status == "completed" for r in self.rank_host)

    def end_lingering(self, done_for_s: float) -> None:
        """Every rank finished ``done_for_s`` ago but processes stay: corral stops them, and
        the run still counts as completed."""
        self.ended_after_done = done_for_s

    def lost(self, host: str, error: BaseException) -> HostLost:
        """The record of ``host`` lost with ``error`` (its tail gave up, or it cannot be
        reached at all)."""
        return HostLost(host=host, reason=str(error), t=time.time(),
                        step=self.last_step.get(host))

    def observe(self, item: TailItem | HostLost) -> list[RunEvent]:
        """Take in one item of the merged tail; return the events it adds for front ends."""
        now = time.time()
        if isinstance(item, (HostLost, LauncherExit)) and item.host in self.left:
            if isinstance(item, HostLost):  # its tail went quiet after it left: no failure
                self.dropped[item.host] = item
            else:
                self.exited[item.host] = item
            return []
        if isinstance(item, HostLost):
            self.dropped[item.host] = item
            if not self.stop.requested:
                self.failures.append(Failure(host=item.host, rank=None, t=item.t,
                                             severity=Severity.HOST_LOST,
                                             why=f"lost: {item.reason}"))
            return [HostStatus(t=item.t, host=item.host, state="unreachable",
                               detail=item.reason)]
        if isinstance(item, RankOwned):
            self.rank_host[item.rank] = item.host
            return []
        if isinstance(item, LauncherExit):
            return self._launcher_exit(item)
        if isinstance(item, RankEvent):
            self._rank_event(item, now)
            return [item]
        if isinstance(item, LogLine):
            self._log_line(item)
            return [item]
        return []

    def _rank_event(self, item: RankEvent, now: float) -> None:
        event = item.event
        if item.host in self.left:
            return  # a rank of a host that left: the run goes on without it
        self.rank_host.setdefault(event.rank, item.host)
        if isinstance(event, StartEvent):
            self.started_hosts.add(item.host)
            self.ended.pop(event.rank, None)
        elif isinstance(event, StepEvent):
            self.last_step[item.host] = max(event.step, self.last_step.get(item.host, 0))
        elif isinstance(event, EndEvent):
            self.ended[event.rank] = event
            if event.status in ("failed", "diverged") and not self.stop.requested:
                self.failures.append(Failure(
                    host=item.host, rank=event.rank, t=event.t, severity=Severity.RANK_FAILED,
                    why=f"{event.status}: {event.error or 'no reason given'}",
                    cause=Cause.DIVERGED if event.status == "diverged" else Cause.OTHER))

    def _log_line(self, item: LogLine) -> None:
        if item.noise:  # a failure is explained by the lines around it, not torch's chatter
            return
        text = item.plain  # a failure's explanation reaches notices and files: no colour
        if item.rank is not None:
            said = self._rank_logs.setdefault(item.rank, deque(maxlen=LOG_LINES_KEPT))
            if item.replaces and self._bars.get(item.rank) in said:
                said.remove(self._bars[item.rank])  # a bar counts once, at its last state
            if item.bar:
                self._bars[item.rank] = text
            said.append(text)
            if (held := HELD_UP_LINE.search(text.strip())):
                self._held_up_by[item.rank] = tuple(map(int, held.group(1).split(", ")))
            return
        self._host_logs.setdefault(item.host, deque(maxlen=LOG_LINES_KEPT)).append(text)
        found = root_cause(text)
        if found.local is not None and item.host not in self._root_rank:
            # torch's rank follows its node order; the host's own ranks (in host order) are
            # the ones its events and logs carry: take the one at that local rank.
            mine = sorted(r for r, h in self.rank_host.items() if h == item.host)
            self._root_rank[item.host] = (mine[found.local] if found.local < len(mine)
                                          else found.local if found.rank is None else found.rank)
        if found.exit is not None and item.host not in self._root_exit:
            self._root_exit[item.host] = found.exit

    def _launcher_exit(self, item: LauncherExit) -> list[RunEvent]:
        self.exited[item.host] = item
        if item.ok:
            return [HostStatus(t=item.t, host=item.host, state="done")]
        if item.status == "stopped":
            # Stopped on request (perhaps by another process): later exits are consequences.
            self.stopped_hosts.add(item.host)
            self.stop.request(StopCause.ELSEWHERE)
            return [HostStatus(t=item.t, host=item.host, state="stopped")]
        rank = self._root_rank.get(item.host)
        code = self._root_exit.get(item.host)
        if rank is None and item.status != DISK_FULL_STATUS and self._host_finished(item.host):
            # No rank of the host failed, and each wrote its completed end: the launcher
            # itself failed afterwards (torchrun's agent losing the master's store as that
            # host's agent exits first): the run's work is done.
            self.after_done.append(f"{item.host}'s launcher ended with status {item.status} "
                                   "after its ranks finished")
            return [HostStatus(t=item.t, host=item.host, state="done",
                               detail=self.after_done[-1])]
        if item.status == DISK_FULL_STATUS or (code == DISK_FULL_EXIT and rank not in self.ended):
            self.failures.append(Failure(  # a rank's words may not fit there: its status did
                host=item.host, rank=rank if code == DISK_FULL_EXIT else None, t=item.t,
                severity=Severity.DISK_FULL,
                why=f"ran out of disk: {disk_full_on(item.host, self.run_dir)}; free space "
                    "there and resume the run", cause=Cause.DISK_FULL))
        elif (rank is not None and code is not None and code < 0 and rank in self.ended
                and self.ended[rank].status == "completed"):
            self.after_done.append(f"{item.host} rank {rank} was killed by signal {-code} "
                                   "after it finished")
            return [HostStatus(t=item.t, host=item.host, state="done",
                               detail=self.after_done[-1])]
        elif rank is None and item.status in KILLED_STATUSES and not self.stop.requested:
            # The host's own launcher was killed: its ranks went with it, and the peers' ranks
            # that die next (a closed connection) are its consequence, not the cause.
            self.failures.append(Failure(
                host=item.host, rank=None, t=item.t, severity=Severity.LAUNCHER_KILLED,
                why=f"launcher {KILLED_STATUSES[item.status]}"))
        elif rank is not None and rank not in self.ended:
            # A rank that died by itself is a cause even if a stop is already under way.
            how = f"was killed by signal {-code}" if code is not None and code < 0 else (
                f"exited with status {code}" if code is not None else "died")
            raised = self._raised(rank)
            # (its status and its StuckRankError both: a script's own exit(4) is no waiting)
            waited = code == WAITING_STATUS and (raised or "").startswith("StuckRankError")
            self.failures.append(Failure(host=item.host, rank=rank, t=item.t,
                                         severity=Severity.RANK_WAITED if waited
                                         else Severity.RANK_DIED,
                                         why=f"{how} without finishing"
                                             + (f": {raised}" if raised else "")))
            if waited:
                self._blame_holders(rank, item.t, raised)
        elif not self.stop.requested:
            self.failures.append(Failure(
                host=item.host, rank=rank, t=item.t, severity=Severity.LAUNCHER_FAILED,
                why=f"launcher ended with status {item.status}"))
        return [HostStatus(t=item.t, host=item.host, state="failed",
                           detail=f"launcher {KILLED_STATUSES['gone']}" if item.status == "gone"
                           else f"launcher status {item.status}")]

    def _blame_holders(self, waiter: int, t: float, raised: str | None) -> None:
        """A rank stuck at its start or between two steps, waiting for others
        (``WAITING_STATUS``), named the ranks that held it up: each is a cause, whether it
        exits first, later (a busy rank), or never by itself (its main thread holds the GIL:
        the run's stop ends it)."""
        what = ("every other rank's start" if not raised or "no first step" in raised
                else "every other rank")
        for rank in self._held_up_by.get(waiter, ()):
            host = self.rank_host.get(rank)
            if host is not None:
                self.failures.append(Failure(
                    host=host, rank=rank, t=t, severity=Severity.RANK_DIED,
                    why=f"held up {what}: {raised or 'no first step'}"))

    def _host_finished(self, host: str) -> bool:
        """Every known rank of ``host`` wrote a completed ``end`` event."""
        mine = [r for r, h in self.rank_host.items() if h == host]
        return bool(mine) and all(r in self.ended and self.ended[r].status == "completed"
                                  for r in mine)

    def _raised(self, rank: int) -> str | None:
        """The last line of the newest traceback in ``rank``'s log, if it printed one."""
        for line in reversed(self._rank_logs.get(rank, ())):
            if (match := TRACEBACK_END.match(line.strip())):
                return match.group(2)
        return None

    def local_write_failed(self, what: str) -> None:
        """This machine could not write the run's records (``what``: the path and why): the
        run ends as on a full disk, its hosts stopped, and this machine is named, not a host."""
        if any(f.cause is Cause.LOCAL_WRITE for f in self.failures):
            return
        self.failures.append(Failure(
            host=LOCAL, rank=None, t=time.time(), severity=Severity.DISK_FULL,
            cause=Cause.LOCAL_WRITE,
            why=(f"could not write the run's records at {what}; the hosts were stopped: make "
                 f"it writable (or free space there) and `corral run --resume {self.run_id}`")))

    def declare_hung(self, hung: Failure) -> None:
        """Record a rank that stopped stepping (``HangGuard.check``) as a cause of failure."""
        self.failures.append(hung)

    def cause_settled(self) -> bool:
        """True when waiting longer cannot change which failure is named first.

        That is once a rank is known to have died by itself or a host dropped, or once no host
        that still runs has a rank without an ``end`` event (its launcher may yet report that
        rank's death).
        """
        if any(f.severity <= Severity.HOST_LOST for f in self.failures):
            return True
        for host in self.hosts:
            if host in self.exited or host in self.dropped:
                continue
            if any(h == host and r not in self.ended for r, h in self.rank_host.items()):
                return False
        return True

    def first_failure(self) -> Failure | None:
        """The failure that caused the others, or None."""
        if not self.failures:
            return None
        return min(self.failures, key=lambda f: f.sort_key)

    def finding(self) -> Finding:
        """How the attempt ended (call once ``finished``)."""
        failure = self.first_failure()
        if (failure is not None and failure.severity > Severity.RANK_DIED and self.stopped_hosts
                and not self.stop.by(StopCause.FAILURE)):
            failure = None  # peers that failed while someone else stopped the run
        if failure is None:
            if self.ended_after_done is not None:
                return Finding(RunOutcome.COMPLETED, (
                    f"{len(self.ended)} rank(s) finished; their processes had not exited "
                    f"{self.ended_after_done:.0f} s later and were ended"))
            if self.stop.requested or self.stopped_hosts:
                return Finding(RunOutcome.STOPPED, "stopped on request")
            note = "".join(f"; {what} (in its teardown)" for what in self.after_done)
            if self._trained_nothing():
                return Finding(RunOutcome.COMPLETED, self._nothing_trained_detail())
            ranks = len(self.ended) or len(self.rank_host)
            return Finding(RunOutcome.COMPLETED, f"{ranks} rank(s) finished{note}")
        who = failure.host + (f" rank {failure.rank}" if failure.rank is not None else "")
        why = failure.why
        raised = self._raised(failure.rank) if failure.rank is not None else None
        if raised and EXIT_ONLY.match(why):
            why = f"failed: {raised} ({why.removeprefix('failed: ')})"
        detail = f"{who} {why}"
        never = self.never_joined()
        if never:
            detail += "; hosts that never joined the rendezvous: " + ", ".join(never)
        lines = self._last_lines(failure)
        if self.explain is not None and (explained := self.explain("\n".join([detail, *lines]))):
            detail += f"; {explained}"  # on the first line: the one `corral run` prints
        if lines:
            detail += "\n" + "\n".join(lines)
        return Finding(RunOutcome.FAILED, detail, failed_host=failure.host,
                       failed_rank=failure.rank, cause=failure.cause)

    def _trained_nothing(self) -> bool:
        """Every rank ended without an optimizer step (a script that exited before training)."""
        return (bool(self.ended) and all(end.step == 0 for end in self.ended.values())
                and not any(self.last_step.values()))

    def _nothing_trained_detail(self) -> str:
        """``trained 0 steps: ...`` and the last lines each rank printed."""
        lines = [f"{TRAINED_NOTHING}: {len(self.ended)} rank(s) ended without one optimizer "
                 "step corral could see in the rank's own process, so the steps, samples and "
                 "rates are unknown (a script that exits before training, evaluates only, or "
                 "trains in processes it starts itself); the last lines each printed:"]
        for rank in sorted(self.ended):
            host = self.rank_host.get(rank, "?")
            said = list(self._rank_logs.get(rank, ()))[-LAST_LINES_SHOWN:] or ["(nothing)"]
            lines += [f"[{host} rank {rank}] {line}" for line in said]
        return "\n".join(lines)

    def never_joined(self) -> list[str]:
        """Hosts with neither a ``start`` event nor a rendezvous result (no rank of theirs
        is known): the ones a rendezvous timeout is waiting for. A host whose ranks failed
        after the rendezvous (in the Gloo mesh, say) joined."""
        joined = self.started_hosts | set(self.rank_host.values())
        return [h for h in self.hosts if h not in joined]

    def _last_lines(self, failure: Failure) -> list[str]:
        if failure.rank is not None and self._rank_logs.get(failure.rank):
            said = fold_frames(list(self._rank_logs[failure.rank]))[-RANK_LINES_KEPT:]
            return [f"[{failure.host} rank {failure.rank}] {line}" for line in said]
        said = fold_frames(list(self._host_logs.get(failure.host, ())))[-RANK_LINES_KEPT:]
        return [f"[{failure.host}] {line}" for line in said]
