"""Each rank's watch on the other members of its generation: a member whose heartbeat stops
moving for ``STALE_S`` is lost, and the generation's process groups are aborted at once
(trainer/membership/abort.py), so that no collective of the generation waits longer for it.

The heartbeat thread (``MembershipStore.start_heartbeat``) reads every watched member's counter
each ``HEARTBEAT_S`` and calls ``Watch.observe``; the main thread names the members of each new
generation (``Watch.follow``) before it makes that generation's group, under the same lock as
the abort, so an abort meant for one generation never reaches the next one's connections.

After a collective failed, and while a generation forms, rank 0 also takes a member whose store
connection closed for gone at once (its process ended: trainer/membership/liveness.py;
``Watch.lost``), without waiting for its heartbeat to go still. Not in the heartbeat's own
judgement: when a run ends, its ranks' processes end one after the other.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

HEARTBEAT_S = 0.25
"""How often each rank's thread bumps its heartbeat counter and reads the others'."""
STALE_S = 3.0
"""A member whose heartbeat has not moved for this long is gone. Inside LOSS_DETECT_S with a
heartbeat to spare; not shorter: a rank's heartbeat is a Python thread, and a main thread that
holds the interpreter (a collection of garbage, a pickling of the state) on a machine loaded
many times over its cores was seen to hold it back for 2 s."""


@dataclass
class Beat:
    """What was last read of one member's heartbeat."""

    count: int
    moved_at: float
    """``time.monotonic()`` when the count last changed (or was first read)."""


class Watch:
    """The members this rank watches, when each one's heartbeat last moved, and whether the
    current generation was aborted."""

    def __init__(self, me: int, abort: Callable[[], object], *, armed: bool,
                 closed: Callable[[int], bool] = lambda member: False) -> None:
        self.me, self._abort, self.armed, self.closed = me, abort, armed, closed
        """``armed``: losses are judged (a launched rank: from its first step, ``arm``);
        ``closed``: whether a member's store connection closed (rank 0's ``Liveness``)."""
        self._lock = threading.Lock()
        self._members: tuple[int, ...] = ()
        self._beats: dict[int, Beat] = {}
        self.tripped_at: float | None = None
        """When this generation was aborted here (``time.time()``); None: not aborted."""

    def follow(self, members: Sequence[int]) -> None:
        """Main thread, before a generation's group is made: watch its members."""
        with self._lock:
            self._members = tuple(m for m in members if m != self.me)
            self.tripped_at = None

    def watched(self) -> tuple[int, ...]:
        return self._members

    def arm(self) -> None:
        """Judge losses from now on. A launched rank arms at its first step: until then the
        ranks build their task and model, which can hold the interpreter (imports, a
        collection) for seconds on a loaded machine, and a loss is the launch's failure."""
        self.armed = True

    def observe(self, counts: dict[int, int], now: float | None = None) -> None:
        """Heartbeat thread: the counters just read (at ``now``, ``time.monotonic()``); abort
        the generation when a watched member's has been still for ``STALE_S``, and again at
        each heartbeat while it is."""
        now = time.monotonic() if now is None else now
        for member, count in counts.items():
            beat = self._beats.get(member)
            if beat is None or beat.count != count:
                self._beats[member] = Beat(count, now)
        with self._lock:
            lost = [m for m in self._members if self.stale(m, now)]
            if not self.armed or not lost:
                return
            if self.tripped_at is None:
                self.tripped_at = time.time()
                print(f"corral trainer: member(s) {lost} silent for {STALE_S:g} s: this "
                      "generation's collectives are aborted", file=sys.stderr, flush=True)
            # Again at each heartbeat while one is lost: a connection made since (the forming
            # of the group, its rendezvous with the lost member) is cut too.
            self._abort()

    def lost(self, member: int, now: float | None = None) -> bool:
        """Whether ``member`` is gone: its store connection closed, or it is ``stale``."""
        return self.closed(member) or self.stale(member, now)

    def stale(self, member: int, now: float | None = None) -> bool:
        """Whether ``member``'s heartbeat has been still for ``STALE_S`` (False while it has
        not been read yet or has not started: ``never_beat``)."""
        beat = self._beats.get(member)
        now = time.monotonic() if now is None else now
        return beat is not None and beat.count > 0 and now - beat.moved_at >= STALE_S

    def never_beat(self, member: int) -> bool:
        """Whether ``member``'s heartbeat has not started (it starts as it forms its first
        generation)."""
        beat = self._beats.get(member)
        return beat is None or beat.count == 0
