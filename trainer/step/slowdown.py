"""Emulated slow devices: make one machine's ranks behave like slower hardware.

This is EMULATION, for testing and demonstrating the balancing policies on one machine: a rank
with slowdown ``s`` takes ``s`` times as long as its own work took, as it would on a device
``s`` times slower, by sleeping the difference after each step's compute. The sleep counts as
compute (``compute_s``), exactly as a slower device's time would.

A rank's own work on a CPU is its process CPU time, not the wall time: ranks sharing a core
(more ranks than cores, or other processes on the machine) wait for each other, and that wait
depends on how much the others compute, so on the split, and on whatever else the machine
runs. Scaling the wall time would scale the wait too, and the emulated device would change
speed whenever the split moved or the machine got busy: a rank that is ``s`` times slower must
take ``s`` times as long for the same work, whatever its neighbours do. So an emulated rank's
compute time is ``s`` times its own work even when waiting for the core made the step longer
than that (the step's wall time, ``step_s``, still shows it). Where the wall time is the
smaller (threads working in parallel) it is the rank's own time. In a run that emulates (a
factor other than 1 on some rank: the ranks ask each other once, ``trainer.dist.on_any_rank``,
as a cluster launch tells each host only its own factor) a rank at factor 1 reports its own
time too, so that the emulated speeds hold against each other; in a run without emulation the
time is the wall time, waits included, as the balancer must see a host that other work slows
down.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from trainer.settings.train_config import SlowdownChange


def emulates(factors: Sequence[float] | None, changes: Sequence[SlowdownChange] = ()) -> bool:
    """Whether a run emulates slower devices: a factor other than 1, or a scheduled change."""
    return any(f != 1.0 for f in factors or ()) or bool(changes)


def emulate_slowdown(factor: float, own_s: float, elapsed_s: float | None = None) -> float:
    """Sleep until ``factor * own_s`` (the compute time of a device ``factor`` times slower,
    see the module) have passed since the work started (``elapsed_s`` have, default ``own_s``;
    no sleep when more have) and return it. ``factor`` 1 returns at once."""
    elapsed = own_s if elapsed_s is None else elapsed_s
    emulated = factor * own_s
    if emulated > elapsed:
        time.sleep(emulated - elapsed)
    return emulated


class WorkTimer:
    """The wall time since ``start`` and the rank's own share of it (see the module)."""

    def __init__(self, cpu: bool = True) -> None:
        self._cpu = cpu
        self._wall0 = self._cpu0 = 0.0

    def start(self) -> None:
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        """``(wall seconds, own seconds)`` since ``start``; on a device other than the CPU
        the own time is the wall time."""
        wall = time.perf_counter() - self._wall0
        if not self._cpu:
            return wall, wall
        return wall, min(wall, time.process_time() - self._cpu0)


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
