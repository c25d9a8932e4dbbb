"""Hung ranks: noticed on corral's side, named, and (after a limit) the run stopped.

A rank stopped with SIGSTOP, or deadlocked, freezes every rank (the others wait in the next
collective) until Gloo's own timeout, half an hour later. The follower therefore watches the
step events: once no step has come from a rank for ``hang_factor`` times its usual step time
(and at least ``MIN_SILENCE_S``), it says so, and asks the hosts what state each silent rank's
process is in (``/proc/PID/stat``: stopped, in uninterruptible I/O, gone, busy or waiting) to
name the one that holds the others up. After ``hang_limit`` seconds without a step it stops
the run naming that rank. A rank that started but never took a first step (stuck in its first
collective) is silent once ``hang_limit`` passes after its start event. A start event's
``total_steps`` of 0 is unknown (a plain script's): no step is taken for the last one. A script's
ranks watch themselves too (``trainer.integrations.start_watch``: they name the ranks waiting in
a collective and the one elsewhere, from inside), so for them corral's own stop waits
``SCRIPT_GRACE_S`` longer, for their word.
"""

from __future__ import annotations

import asyncio
import shlex
import statistics
import time
from collections import deque
from dataclasses import dataclass, field

from remote.events import RankEvent
from remote.hosts.pool import HostPool
from remote.hosts.transport import Transport
from remote.run.failures import Failure, Severity
from trainer.events import EndEvent, StartEvent, StepEvent

MIN_SILENCE_S = 10.0
NO_FIRST_STEP = "no first step"
"""How a hang's reason begins when a rank never took its first step (the notifier's "stuck"
notice reads it: ``remote/run/notify.py``)."""
"""Never call a rank silent sooner (a checkpoint or a rebalance makes one step slower)."""
SCRIPT_GRACE_S = 15.0
"""Seconds past ``hang_limit`` that a script's ranks have to name the hang themselves (their
watch gathers positions for 5 s, then the waiting ranks exit 5 s later)."""
STEP_TIMES_KEPT = 20
STATE_WORDS = {"T": "stopped (SIGSTOP)", "t": "stopped by a debugger",
               "D": "blocked in uninterruptible I/O", "Z": "dead (a zombie)",
               "gone": "no longer running (it exited or was killed)",
               "R": "busy but not stepping", "S": "waiting"}
"""What a process state letter says about a silent rank, most suspicious first."""
UNASKED = "of unknown state: its host cannot be asked (unreachable is not hung)"


@dataclass(frozen=True)
class Silence:
    """Ranks without a step for too long."""

    ranks: tuple[int, ...]
    seconds: float
    """Seconds since the most recent step of any of them."""
    usual_s: float
    """The usual step time (median of recent steps) of the silent ranks."""


@dataclass
class HangWatch:
    """Follows the step events of one run; ``silence`` says which ranks went quiet."""

    factor: float
    limit_s: float
    pids: dict[int, tuple[str, int]] = field(default_factory=dict)
    """Rank -> (host, pid), from the ranks' start events."""
    _last: dict[int, float] = field(default_factory=dict)
    _step_s: dict[int, deque[float]] = field(default_factory=dict)
    _total: int | None = None
    """The run's total steps; None while unknown (a plain script's start says 0)."""
    script: bool = False
    """The ranks run a script (its start event's ``task``): they watch themselves too."""

    def heard_again(self, host: str, now: float) -> None:
        """``host`` is reachable again: its ranks' silence counts from ``now``."""
        for rank, (where, _) in self.pids.items():
            if where == host and rank in self._last:
                self._last[rank] = now

    def forget(self, hosts: frozenset[str]) -> None:
        """``hosts`` left the run live: their ranks' quiet is right from now on."""
        for rank, (where, _) in self.pids.items():
            if where in hosts:
                self._last.pop(rank, None)

    def observe(self, item: RankEvent, now: float) -> None:
        """Take in a rank event received at ``now`` (monotonic seconds)."""
        event = item.event
        if isinstance(event, StartEvent):
            self.pids[event.rank] = (item.host, event.pid)
            self._total = event.total_steps or None
            self.script = event.task == "script"
            # Started, no step yet: silent once ``limit_s`` passes without a first step (a
            # rank stuck in its first collective holds every rank until torch's timeout).
            self._last[event.rank] = now
            self._step_s.pop(event.rank, None)
        elif isinstance(event, StepEvent):
            self._last[event.rank] = now
            self._step_s.setdefault(event.rank, deque(maxlen=STEP_TIMES_KEPT)).append(
                event.step_s)
            if self._total is not None and event.step >= self._total:
                self._last.pop(event.rank, None)  # its last step: quiet from now on is right
        elif isinstance(event, EndEvent):
            self._last.pop(event.rank, None)

    def silence(self, now: float, unreachable: frozenset[str] = frozenset()) -> Silence | None:
        """The ranks silent past ``factor`` times their usual step time, or None. Ranks on an
        ``unreachable`` host are not silent: corral cannot hear them, they may well step."""
        silent: list[int] = []
        usual: list[float] = []
        for rank, last in self._last.items():
            if self.pids.get(rank, ("", 0))[0] in unreachable:
                continue
            if rank not in self._step_s:  # no first step yet: the hang limit is its bound
                if self.limit_s and now - last > max(self.limit_s, MIN_SILENCE_S):
                    silent.append(rank)
                continue
            typical = statistics.median(self._step_s[rank])
            if now - last > max(self.factor * typical, MIN_SILENCE_S):
                silent.append(rank)
                usual.append(typical)
        if not silent:
            return None
        newest = max(self._last[r] for r in silent)
        return Silence(ranks=tuple(sorted(silent)), seconds=now - newest,
                       usual_s=statistics.median(usual) if usual else 0.0)


async def rank_states(pool: HostPool, pids: dict[int, tuple[str, int]],
                      ranks: tuple[int, ...]) -> dict[int, str]:
    """The process state letter of each rank in ``ranks`` (``gone`` when it has no process,
    ``?`` when its host cannot be asked)."""
    by_host: dict[str, dict[int, int]] = {}
    for rank in ranks:
        if rank in pids:
            host, pid = pids[rank]
            by_host.setdefault(host, {})[pid] = rank

    async def ask(transport: Transport) -> dict[int, str]:
        wanted = by_host[transport.host.name]
        script = (f"for p in {' '.join(str(p) for p in wanted)}; do "
                  's=$(cat "/proc/$p/stat" 2>/dev/null) && s=${s##*") "} && '
                  'echo "$p ${s%% *}" || echo "$p gone"; done')
        out = (await transport.run(script, timeout=15.0)).stdout.split("\n")
        found = {}
        for line in out:
            words = line.split()
            if len(words) == 2 and words[0].isdigit() and int(words[0]) in wanted:
                found[wanted[int(words[0])]] = words[1]
        return found

    states = {rank: "?" for rank in ranks}
    results = await pool.gather(ask, list(by_host))
    for result in results.values():
        if isinstance(result, dict):
            states.update(result)
    return states


def culprit(states: dict[int, str]) -> int:
    """The rank most likely to hold the others up: the most suspicious process state first
    (stopped, I/O, gone, busy), the lowest rank among equals."""
    order = {letter: i for i, letter in enumerate(STATE_WORDS)}
    return min(states, key=lambda r: (order.get(states[r], len(order)), r))


def describe(states: dict[int, str], pids: dict[int, tuple[str, int]]) -> str:
    """``rank 1 on h1 is stopped (SIGSTOP); rank 0 on h0 is waiting``."""
    return "; ".join(
        f"rank {r} on {pids[r][0] if r in pids else '?'} is "
        f"{STATE_WORDS.get(s, UNASKED if s == '?' else shlex.quote(s))}"
        for r, s in sorted(states.items()))


class HangGuard:
    """The follower's use of ``HangWatch``: one line when the set of silent ranks changes
    (then their process states, asked in the background), and past the limit the rank to
    blame. A rank on a host corral cannot reach is not silent (its host is reconnecting), and
    a rank whose host cannot be asked is never called hung."""

    def __init__(self, pool: HostPool, factor: float, limit_s: float) -> None:
        self.watch = HangWatch(factor=factor, limit_s=limit_s)
        self._pool = pool
        self._probe: asyncio.Task[dict[int, str]] | None = None
        self._states: dict[int, str] = {}
        self._silent: tuple[int, ...] = ()
        """The silent ranks the last line said."""
        self._said_states = False
        self._unreachable: set[str] = set()

    def observe(self, item: RankEvent, now: float) -> None:
        """See ``HangWatch.observe``."""
        self.watch.observe(item, now)

    def host_reachable(self, host: str, reachable: bool, now: float) -> None:
        """A host's connection was lost (its ranks are not judged) or found again (their
        silence counts from ``now``)."""
        if reachable and host in self._unreachable:
            self._unreachable.discard(host)
            self.watch.heard_again(host, now)
        elif not reachable:
            self._unreachable.add(host)

    def check(self, now: float) -> tuple[list[str], Failure | None]:
        """Lines to show now, and the hung rank's ``Failure`` once the run must be stopped."""
        silence = self.watch.silence(now, frozenset(self._unreachable))
        ranks = silence.ranks if silence is not None else ()
        lines: list[str] = []
        if ranks != self._silent:
            lines.append(self._changed(ranks, silence))
        if silence is None:
            return lines, None
        if self._probe is not None and self._probe.done() and not self._said_states:
            self._said_states = True
            if not self._probe.cancelled() and self._probe.exception() is None:
                self._states = self._probe.result()
                lines.append(describe(self._states, self.watch.pids))
        limit = self.watch.limit_s
        grace = SCRIPT_GRACE_S if self.watch.script else 0.0
        if not limit or silence.seconds < limit + grace or not self._said_states:
            return lines, None  # (the states are in before a rank is blamed)
        rank = culprit(self._states) if self._states else silence.ranks[0]
        if self._states.get(rank, "?") == "?":
            return lines, None  # its host cannot be asked: unreachable, not hung
        host = self.watch.pids.get(rank, ("?", 0))[0]
        state = STATE_WORDS.get(self._states[rank], "silent")
        waited = (f"{NO_FIRST_STEP} {silence.seconds:.0f} s after it started (stuck in its first"
                  " collective or before it)" if not silence.usual_s else
                  f"no step for {silence.seconds:.0f} s (usual step {silence.usual_s:.2f} s)")
        why = f"hung: {waited}, limit [run] hang_limit = {limit:g} s; its process is {state}"
        return lines, Failure(host=host, rank=rank, t=time.time(), severity=Severity.RANK_DIED,
                              why=why)

    def _changed(self, ranks: tuple[int, ...], silence: Silence | None) -> str:
        """The one line for a new set of silent ranks; their states are asked anew."""
        before, self._silent = self._silent, ranks
        self.close()
        self._probe, self._states, self._said_states = None, {}, False
        if silence is None:
            return f"rank(s) {', '.join(map(str, before))} stepping again"
        self._probe = asyncio.ensure_future(rank_states(self._pool, self.watch.pids, ranks))
        usual = (f"usual step {silence.usual_s:.2f} s" if silence.usual_s
                 else f"{NO_FIRST_STEP} yet")
        return (f"no step for {silence.seconds:.0f} s from rank(s) "
                f"{', '.join(map(str, ranks))} ({usual}); asking their hosts why")

    def close(self) -> None:
        """Cancel a probe still under way."""
        if self._probe is not None:
            self._probe.cancel()
