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


def end_cut_off(where: str, limit_s: float) -> None:
    """Say why, ask this rank's launcher to end, and exit ``CUT_OFF_EXIT``."""
    print(f"corral trainer: the run's membership store at {where} has not answered for "
          f"{limit_s:g} s: this host is cut off from the run; its rank ends",
          file=sys.stderr, flush=True)
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
