"""Emulated slow devices: make one machine's ranks behave like slower hardware.

This is EMULATION, for testing and demonstrating the balancing policies on one machine: a rank
with slowdown ``s`` sleeps ``(s - 1)`` times its measured forward+backward time after each
step's compute, so its step takes ``s`` times as long, as it would on a device ``s`` times
slower. The sleep counts as compute (``compute_s``), exactly as a slower device's time would.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from trainer.settings.train_config import SlowdownChange


def emulate_slowdown(factor: float, compute_s: float) -> float:
    """Sleep ``(factor - 1) * compute_s`` and return the emulated compute time
    ``factor * compute_s``. ``factor`` 1 returns at once."""
    if factor > 1.0 and compute_s > 0.0:
        time.sleep((factor - 1.0) * compute_s)
    return factor * compute_s


class SlowdownSchedule:
    """One rank's slowdown factor over the run: an initial factor plus scheduled changes."""

    def __init__(self, initial: float, changes: Sequence[SlowdownChange], rank: int) -> None:
        self.initial = initial
        # Only this rank's changes matter, ordered by the step they start at.
        self._changes = sorted((c for c in changes if c.rank == rank), key=lambda c: c.step)

    def factor_at(self, step: int) -> float:
        """The factor in effect for step ``step`` (1-based: the step about to run)."""
        factor = self.initial
        for change in self._changes:
            if change.step <= step:
                factor = change.factor
        return factor
