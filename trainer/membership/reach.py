"""A rank cut off from its run ends by itself: nothing outlives its run, even behind a cut.

With live membership the survivors take a silent host out within ``LOSS_DETECT_S`` and go on;
the host's ranks, behind a link that drops every packet, hear nothing: no connection closes,
their collective waits for the group's 30-minute timeout and their heartbeat's store request
for the store's. So each rank's heartbeat notes every answer of the run's membership store
(``Reach.heard``), and a watchdog thread of its own, which never touches the network, ends the
rank once the store has not answered for ``CUT_OFF_S``: it says so on stderr, asks its
launcher to end (SIGTERM to ``LAUNCHER_PID_ENV``'s process: torchrun's agent then ends without
the rendezvous shutdown that would wait on the cut link too) and exits ``CUT_OFF_EXIT``. The
host's other ranks do the same; the launcher's end ends the host's tailer. Bound: a rank
behind a cut ends within ``CUT_OFF_S`` + ``TICK_S`` of the store's last answer, its launcher
and tailer a few seconds later (docs/reliability.md).

A rank whose link comes back before that silence ends is not cut off, yet the run may have
gone on without it: rank 0's plan after a loss of its generation (``plan/<generation>/loss``)
leaves it out. Its collective then fails once its peers' closed connections reach it, and it
leaves by itself; where nothing reaches it (its peers' connections given up while it was cut
off, or it waits on something else of the old generation), its heartbeat, which reaches the
store again, reads that plan (``Dropped``) and ends the rank the same way after
``DROPPED_GRACE_S``. Bound: within ``DROPPED_GRACE_S`` + a heartbeat of the store's first answer
after the plan.

The master's host never cuts itself off (rank 0 serves the store there). A rank whose own main
thread held the interpreter (a long pickling) is not judged by that gap: a watchdog that was
itself kept from running for ``STARVED_S`` starts a fresh window. Pushed with the trainer:
imports nothing of corral's but the launch contract.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from trainer.launch_contract import LAUNCHER_PID_ENV

CUT_OFF_S = 30.0
"""A rank whose run's store has not answered for this long is cut off and ends. Far above a
store's answer (milliseconds) and the survivors' ``LOSS_DETECT_S`` (they have gone on by then);
under the 60 s a host's leftovers may live."""
TICK_S = 1.0
"""How often the watchdog looks."""
STARVED_S = 5.0
"""A watchdog that did not run for this long was starved of the interpreter, not cut off."""
DROPPED_GRACE_S = 10.0
"""A rank the run went on without is given this long to leave by itself (its collective fails
and it reads the plan: exit 0, its ``end`` event ``left``) before its heartbeat ends it."""
CUT_OFF_EXIT = 75
"""The exit status of a rank that ended because it was cut off (``EX_TEMPFAIL``)."""


class Reach:
    """When this rank last heard from its run's store (``time.monotonic()``)."""

    def __init__(self, limit_s: float = CUT_OFF_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_s, self._clock = limit_s, clock
        self.last = self.looked = clock()
        self.stopped = False

    def heard(self) -> None:
        """The store answered (the heartbeat thread, after each round)."""
        self.last = self._clock()

    def stop(self) -> None:
        """This rank is done with the store (it left, or the run ended): never cut off."""
        self.stopped = True

    def cut_off(self) -> bool:
        """Whether the store has been silent for ``limit_s`` (the watchdog, each ``TICK_S``)."""
        now = self._clock()
        if now - self.looked >= STARVED_S:  # this thread did not run: nobody could hear
            self.last = now
        self.looked = now
        return not self.stopped and now - self.last >= self.limit_s


class Dropped:
    """Whether the run went on without this rank for ``grace_s``: what its heartbeat reads of
    rank 0's plan after a loss of its generation, each time it reaches the store."""

    def __init__(self, grace_s: float = DROPPED_GRACE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s, self._clock = grace_s, clock
        self.since: float | None = None
        """When the plan was first found to leave this rank out (``clock()``); None: it is in."""

    def seen(self, left_out: bool) -> bool:
        """The heartbeat's reading (``left_out``: the plan leaves this rank out); whether it
        has been left out for ``grace_s``, so it ends."""
        now = self._clock()
        if not left_out:
            self.since = None
        elif self.since is None:
            self.since = now
        return self.since is not None and now - self.since >= self.grace_s


def end_cut_off(where: str, limit_s: float) -> None:
    """Say why, ask this rank's launcher to end, and exit ``CUT_OFF_EXIT``."""
    end_rank(f"the run's membership store at {where} has not answered for {limit_s:g} s: "
             "this host is cut off from the run; its rank ends")


def end_dropped(generation: int) -> None:
    """The run went on without this rank (``generation``'s plan after a loss left it out)."""
    end_rank(f"the run went on without this rank (generation {generation + 1} was formed "
             "without it after it was cut off): its rank ends")


def end_rank(why: str) -> None:
    """Say ``why`` on stderr, ask this rank's launcher to end, and exit ``CUT_OFF_EXIT``."""
    print(f"corral trainer: {why}", file=sys.stderr, flush=True)
    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    if launcher.isdigit() and os.getppid() == int(launcher):  # its own launcher, still there
        with contextlib.suppress(OSError):
            os.kill(int(launcher), signal.SIGTERM)
    os._exit(CUT_OFF_EXIT)


def watch_reach(reach: Reach, where: str,
                end: Callable[[str, float], None] = end_cut_off) -> threading.Thread:
    """Start the watchdog thread: ``end(where, limit_s)`` once ``reach`` is cut off."""
    def run() -> None:
        while not reach.stopped:
            if reach.cut_off():
                end(where, reach.limit_s)
                return
            time.sleep(TICK_S)

    thread = threading.Thread(target=run, name="corral-reach", daemon=True)
    thread.start()
    return thread
