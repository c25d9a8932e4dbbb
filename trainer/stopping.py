"""How a run stops early: a stop request by signal, agreed by every rank at the next step, and
a diverged loss, which stops every rank together before anything is written."""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType

from profiles.user_errors import CorralError
from trainer.step.step_records import RunProgress


class Interrupted(Exception):
    """A second SIGINT/SIGTERM arrived: abandon the current step."""


class Diverged(CorralError):
    """The global loss is not finite: training has diverged (every rank raises it together)."""

    title = "training diverged"
    exit_code = 3


def check_finite_loss(global_loss_sum: float, run: RunProgress) -> None:
    """Raise ``Diverged`` when step ``run.step``'s global loss is NaN or infinite."""
    if math.isfinite(global_loss_sum):
        return
    raise Diverged(
        f"the loss is {global_loss_sum} at step {run.step}; the parameters are no longer "
        "usable, so no checkpoint was written after it"
        + (f" (the last good one is {run.checkpoint})" if run.checkpoint else "")
        + ". Lower [run] lr (or check the data) and start again, or resume from that checkpoint")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def abandons(arrivals: Sequence[float], window_s: float) -> bool:
    """Whether stop signals that reached the process at these times (ascending, monotonic
    seconds) hold a second request: one later than ``window_s`` after the first."""
    return len(arrivals) > 1 and arrivals[-1] - arrivals[0] > window_s


class StopSignals:
    """SIGINT/SIGTERM: the first asks every rank to stop after the current step (agreed through
    the per-step all-gather); another one arriving later than ``ABANDON_AFTER_S`` after the first
    abandons the step.

    Repeats within that window are the same request arriving twice: a process-group kill
    reaches the rank directly and again through torchrun, and Ctrl-C reaches both as well.
    The window is counted from when each signal *arrives*, not from when Python handles it:
    Python runs handlers between the main thread's bytecodes, so a rank waiting in a collective
    handles a signal only when the collective returns, which on a long step is seconds later.
    The interpreter writes each signal's number to a wakeup pipe at arrival; a thread stamps
    the bytes it reads there, and the handler reads what the thread has not yet read, under one
    lock (reentrant: a handler can run inside another).
    """

    ABANDON_AFTER_S = 2.0

    def __init__(self) -> None:
        self.signum: int | None = None
        self._arrivals: list[float] = []  # when each stop signal arrived, ascending
        self._lock = threading.RLock()
        self._wakeup_fd = -1

    def install(self) -> None:
        """From the main thread: the handlers, the wakeup pipe and the thread that stamps it."""
        self._wakeup_fd, write_fd = os.pipe()
        os.set_blocking(self._wakeup_fd, False)
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._stamp_arrivals, name="corral-stop-signals",
                         daemon=True).start()
        # A forked child (a task's data worker) inherits the handler and the pipe, and the
        # signals that reach it are not this rank's: it stops writing to the pipe.
        os.register_at_fork(after_in_child=self._leave_pipe)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _leave_pipe(self) -> None:
        self._wakeup_fd = -1
        with contextlib.suppress(ValueError):  # forked from a thread other than the main one
            signal.set_wakeup_fd(-1)

    def _stamp_arrivals(self) -> None:
        while True:
            select.select([self._wakeup_fd], [], [])
            with self._lock:
                self._read_arrivals()

    def _read_arrivals(self) -> None:
        """Stamp the signals waiting in the wakeup pipe (the caller holds the lock)."""
        try:
            numbers = os.read(self._wakeup_fd, 512)
        except BlockingIOError:
            return
        now = time.monotonic()
        self._arrivals += [now for number in numbers if number in STOP_SIGNALS]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._wakeup_fd < 0:  # no pipe (a forked child): handled is when it arrived
            self._arrivals.append(time.monotonic())
        else:
            with self._lock:
                self._read_arrivals()
        if self.signum is None:
            self.signum = signum
        if abandons(self._arrivals, self.ABANDON_AFTER_S):
            raise Interrupted(f"abandoned the step on a second {signal.Signals(signum).name}")
