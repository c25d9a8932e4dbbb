"""Timing a rank's own forward+backward without the gradient all-reduce wait.

DDP overlaps the all-reduce with backward, and ``backward()`` returns only once the all-reduce
is done, so timing around it would give every rank the slowest rank's time and hide the
straggler. Instead a DDP communication hook notes when the last gradient bucket becomes ready:
that is when this rank's own backward finished. It then runs the usual all-reduce, unchanged.

Emulated slowdown (``--slowdown``) is applied in the same hook, before the last bucket's
all-reduce starts: a device that is s times slower finishes its backward later, so the other
ranks must wait for it at the all-reduce, not after it. Sleeping after ``backward()`` instead
would let the rank's sleep overlap the next step of the others and misstate the straggler.

Two clocks behind one interface (``StepClock``), each answering ``times(step)`` (this step's
compute seconds) and ``tally_time(step, before)`` (the time the step's tally carries):

- ``CpuClock``: a perf_counter, known in the hook, so the tally carries this step's time. The
  share runner's ``EarlyTally`` (``fire_at_last_bucket``) lets the last bucket's hook start the
  tally all-gather right after issuing that bucket's all-reduce, so the two small collectives
  travel together instead of one after the other (the order of collectives is the same on
  every rank).
- ``CudaClock``: two CUDA events. Reading their elapsed time waits for the device, so a step's
  time is read only after the step's tally read (the events are complete then: no wait) and the
  NEXT step's tally carries it: ``tally_time`` returns the step before's time, which the
  trainer keeps in its run record (``RunProgress.last_timed``). The clock itself remembers
  nothing between steps. Emulating a slower device (``--slowdown``) needs the time inside the
  hook and waits for the GPU there: emulation is for tests and benches.
"""

# No `from __future__ import annotations`: DDP checks the hook's annotations at runtime.

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from trainer.step.slowdown import WorkTimer, emulate_slowdown
from trainer.step.tally import ComputeTime, PendingTallies, TallyExchange


class EarlyTally:
    """A CPU rank's tally all-gather, started by the clock's hook inside the last backward.

    The share runner ``arm``s it before the last backward with the step's loss sum and units
    (its last pass included) and the exchange seconds the tally carries; the hook ``fire``s it
    with the compute seconds; the runner then ``take``s the pending gather (None when nothing
    fired: the trainer then starts the gather itself)."""

    def __init__(self, exchange: TallyExchange) -> None:
        self.exchange = exchange
        self._armed: tuple[int, torch.Tensor, torch.Tensor, float] | None = None
        self._pending: PendingTallies | None = None

    def arm(self, step: int, loss_sum: torch.Tensor, units: torch.Tensor,
            exchange_s: float) -> None:
        """The tally of ``step`` is complete but for the compute time."""
        self._armed = (step, loss_sum, units, exchange_s)

    def fire(self, compute_s: float) -> None:
        """From the last bucket's hook: start the gather (once per arming)."""
        armed, self._armed = self._armed, None
        if armed is not None:
            step, loss_sum, units, exchange_s = armed
            self._pending = self.exchange.start(loss_sum, units, ComputeTime(step, compute_s),
                                                exchange_s)

    def take(self) -> PendingTallies | None:
        """The gather the hook started in this step, if any (and disarm)."""
        pending, self._pending, self._armed = self._pending, None, None
        return pending


class StepClock(ABC):
    """Forward-start to last-bucket-ready time of one rank's step (the interface of both
    clocks): ``start``, the DDP ``hook``, ``passes_done``, then ``times``/``tally_time``."""

    times_exchange: bool
    """The host's clock sees when the gradient exchange ends, so the step's exchange seconds
    can be measured (a CPU rank's; a GPU's collectives are queued, not waited for)."""

    reduce: Callable[..., torch.futures.Future[torch.Tensor]] = staticmethod(allreduce_hook)
    """How the hook reduces a bucket: DDP's own all-reduce (mean); the DDP helper's live
    membership puts its own here (trainer/integrations/ddp_live.py)."""

    def __init__(self, emulated_run: bool) -> None:
        self._emulated_run = emulated_run
        """The run emulates slower devices: this rank's time is its own work times its factor,
        at factor 1 too (step/slowdown.py)."""
        self._factor = 1.0
        self._emulated: float | None = None
        """This step's emulated seconds, once known (0.0: a benched rank computed nothing)."""
        self.last_bucket_at: float | None = None
        """perf_counter when the step's last bucket was ready (CPU ranks; None: not seen). The
        gradient exchange's wait is measured from here (trainer/step/accumulate.py)."""

    def start(self, slowdown: float = 1.0) -> None:
        """Mark the start of the forward pass; ``slowdown`` is this step's emulation factor."""
        self._factor = slowdown
        self._emulated = None
        self.last_bucket_at = None
        self._start()

    def hook(
        self, process_group: dist.ProcessGroup | None, bucket: dist.GradBucket
    ) -> torch.futures.Future[torch.Tensor]:
        """DDP comm hook: timestamp the last bucket (and emulate a slower device there), then
        DDP's own all-reduce (mean)."""
        if bucket.is_last():
            self._mark_end()
            if self._emulating:
                wall, own = self._real_elapsed()
                self._emulated = emulate_slowdown(self._factor, own, wall)
        reduced = self.reduce(process_group, bucket)
        if bucket.is_last():
            self._after_last_bucket()
        return reduced

    def passes_done(self, ran: bool) -> None:
        """After the rank's last backward of the step (``ran``: it ran any pass). Where the last
        bucket's hook did not fire (a step with a benched rank all-reduces explicitly, after
        this), the end is marked here. A rank that ran no pass (benched) computed nothing: its
        time is 0 and nothing is emulated (its probe thread's work is not the step's)."""
        if not ran:
            self._emulated = 0.0
        else:
            self._end_unless_marked()

    def fire_at_last_bucket(self, early: EarlyTally) -> bool:
        """Fire ``early`` in the last bucket's hook with this rank's compute seconds, from now
        on; False where this clock cannot know them there without waiting (a GPU's)."""
        return False

    def times(self, step: int) -> ComputeTime:
        """Step ``step``'s compute seconds on this rank (after its backward), emulated slowdown
        included. On a GPU read it after the step's tally read: before, it waits."""
        return ComputeTime(step, self._seconds())

    @abstractmethod
    def tally_time(self, step: int, before: ComputeTime | None) -> ComputeTime:
        """The compute time step ``step``'s tally carries, read without waiting; ``before``
        is this rank's time of the step before (None: this process ran none)."""

    @property
    def _emulating(self) -> bool:
        return self._emulated_run or self._factor != 1.0

    def _seconds(self) -> float:
        if self._emulated is not None:
            return self._emulated
        wall, own = self._real_elapsed()
        if self._emulating:  # no bucket seen: emulate here instead
            return emulate_slowdown(self._factor, own, wall)
        return wall

    @abstractmethod
    def _start(self) -> None:
        """Start timing the forward."""

    @abstractmethod
    def _mark_end(self) -> None:
        """The last bucket is ready: the end of this rank's own backward."""

    @abstractmethod
    def _after_last_bucket(self) -> None:
        """After the last bucket's all-reduce was issued."""

    @abstractmethod
    def _end_unless_marked(self) -> None:
        """The passes are done: mark the end if no hook did."""

    @abstractmethod
    def _real_elapsed(self) -> tuple[float, float]:
        """(wall, own) seconds of the forward+backward: the own time leaves out waiting for
        other processes on a shared CPU core (see step/slowdown.py); a GPU's is its own."""


class CpuClock(StepClock):
    """perf_counter and the process's own CPU time; the tally carries this step's time."""

    times_exchange = True

    def __init__(self, emulated_run: bool = False) -> None:
        super().__init__(emulated_run)
        self._early: EarlyTally | None = None
        self._timer = WorkTimer()
        self._end: tuple[float, float] | None = None
        """(wall, own) seconds at the last bucket (None: not yet)."""

    def tally_time(self, step: int, before: ComputeTime | None) -> ComputeTime:
        return self.times(step)

    def fire_at_last_bucket(self, early: EarlyTally) -> bool:
        self._early = early
        return True

    def _start(self) -> None:
        self._end = None
        self._timer.start()

    def _mark_end(self) -> None:
        self._end = self._timer.read()

    def _after_last_bucket(self) -> None:
        self.last_bucket_at = time.perf_counter()
        if self._early is not None:
            self._early.fire(self._seconds())

    def _end_unless_marked(self) -> None:
        # A slower device is emulated here, before the explicit all-reduce, as the hook does.
        if self._end is None:
            self._end = self._timer.read()
            if self._emulating:
                wall, own = self._end
                self._emulated = emulate_slowdown(self._factor, own, wall)

    def _real_elapsed(self) -> tuple[float, float]:
        return self._end if self._end is not None else self._timer.read()


class CudaClock(StepClock):
    """Two CUDA events; the tally carries the step before's time (read without a wait)."""

    times_exchange = False

    def __init__(self, emulated_run: bool = False) -> None:
        super().__init__(emulated_run)
        self._start_event = torch.cuda.Event(enable_timing=True)
        self._end_event = torch.cuda.Event(enable_timing=True)
        self._end_recorded = False

    def tally_time(self, step: int, before: ComputeTime | None) -> ComputeTime:
        return before if before is not None else ComputeTime(0, math.nan)

    def _start(self) -> None:
        self._end_recorded = False
        self._start_event.record()

    def _mark_end(self) -> None:
        self._end_event.record()
        self._end_recorded = True

    def _after_last_bucket(self) -> None:
        pass  # the time is read after the step's tally read, when the events are complete

    def _end_unless_marked(self) -> None:
        if not self._end_recorded:
            self._mark_end()

    def _real_elapsed(self) -> tuple[float, float]:
        if not self._end_recorded:  # no bucket seen (no gradients): time up to now
            self._end_event.record()
        self._end_event.synchronize()
        seconds = float(self._start_event.elapsed_time(self._end_event)) / 1000.0
        return seconds, seconds


def make_clock(device: torch.device, *, emulated_run: bool = False) -> StepClock:
    """The clock for ``device``: CUDA events on a GPU, perf_counter elsewhere."""
    if device.type == "cuda":
        return CudaClock(emulated_run)
    return CpuClock(emulated_run)
