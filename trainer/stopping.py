"""How a run stops early: a stop request by signal, agreed by every rank at the next step, and
a diverged loss, which stops every rank together before anything is written."""

from __future__ import annotations

import math
import signal
import time
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


class StopSignals:
    """SIGINT/SIGTERM: the first asks every rank to stop after the current step (agreed through
    the per-step all-gather); another one later than ``ABANDON_AFTER_S`` abandons the step.

    Repeats within that window are the same request arriving twice: a process-group kill
    reaches the rank directly and again through torchrun, and Ctrl-C reaches both as well.
    """

    ABANDON_AFTER_S = 2.0

    def __init__(self) -> None:
        self.signum: int | None = None
        self._first_at = 0.0

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first_at = signum, now
        elif now - self._first_at > self.ABANDON_AFTER_S:
            raise Interrupted(f"abandoned the step on a second {signal.Signals(signum).name}")
