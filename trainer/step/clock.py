"""Timing a rank's own forward+backward without the gradient all-reduce wait.

DDP overlaps the all-reduce with backward, and ``backward()`` returns only once the all-reduce
is done, so timing around it would give every rank the slowest rank's time and hide the
straggler. Instead a DDP communication hook notes when the last gradient bucket becomes ready:
that is when this rank's own backward finished. It then runs the usual all-reduce, unchanged.

Emulated slowdown (``--slowdown``) is applied in the same hook, before the last bucket's
all-reduce starts: a device that is s times slower finishes its backward later, so the other
ranks must wait for it at the all-reduce, not after it. Sleeping after ``backward()`` instead
would let the rank's sleep overlap the next step of the others and misstate the straggler.

On a GPU the two timestamps are CUDA events. Reading their elapsed time waits for the device,
so the trainer reads a step's time only after the step's tally read (``step_seconds``), when
the events are complete and the read costs no wait; the tally then carries it one step later
(``tally_time``, see trainer/step/tally.py). A CPU rank's time is a perf_counter, known in the
hook, and its tally carries it in the same step. Emulating a slower device (``--slowdown``)
needs the time inside the hook and waits for the GPU there: emulation is for tests and benches.

The early tally of CPU ranks (``EarlyTally``): the last bucket's hook starts the tally
all-gather right after issuing that bucket's all-reduce, so the two small collectives travel
together instead of one after the other (the order of collectives is the same on every rank).
"""

# No `from __future__ import annotations`: DDP checks the hook's annotations at runtime.

import time

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from trainer.step.slowdown import WorkTimer, emulate_slowdown
from trainer.step.tally import PendingTallies, TallyExchange


class EarlyTally:
    """A CPU rank's tally all-gather, started by the clock's hook inside the last backward.

    The share runner ``arm``s it before the last backward with the step's loss sum and units
    (its last pass included); the hook ``fire``s it with the compute seconds; the step then
    ``take``s the pending gather (None when nothing fired: then it starts the gather itself)."""

    def __init__(self, exchange: TallyExchange) -> None:
        self.exchange = exchange
        self._armed: tuple[int, torch.Tensor, torch.Tensor] | None = None
        self._pending: PendingTallies | None = None

    def arm(self, step: int, loss_sum: torch.Tensor, units: torch.Tensor) -> None:
        """The tally of ``step`` is complete but for the compute time."""
        self._armed = (step, loss_sum, units)

    def fire(self, compute_s: float) -> None:
        """From the last bucket's hook: start the gather (once per arming)."""
        armed, self._armed = self._armed, None
        if armed is not None:
            step, loss_sum, units = armed
            self._pending = self.exchange.start(loss_sum, units, (step, compute_s))

    def take(self) -> PendingTallies | None:
        """The gather the hook started in this step, if any (and disarm)."""
        pending, self._pending, self._armed = self._pending, None, None
        return pending


class ComputeClock:
    """Forward-start to last-bucket-ready time; CUDA events on GPUs, perf_counter on CPUs."""

    def __init__(self, device: torch.device, emulated_run: bool = False,
                 early: EarlyTally | None = None) -> None:
        self._cuda = device.type == "cuda"
        self._emulated_run = emulated_run
        """The run emulates slower devices: this rank's time is its own work times its factor,
        at factor 1 too (step/slowdown.py)."""
        self._timer = WorkTimer()
        self._t1: tuple[float, float] | None = None
        """(wall, own) seconds at the last bucket (CPU ranks)."""
        self._factor = 1.0
        self._emulated: float | None = None
        self.early = early if not self._cuda else None
        """Fired in the hook of the last bucket, after its all-reduce was issued, with this
        rank's compute seconds (CPU ranks only: their clock needs no device sync)."""
        self.last_bucket_at: float | None = None
        """perf_counter when the step's last bucket was ready (CPU ranks; None: not seen). The
        gradient exchange's wait is measured from here (trainer/step/accumulate.py)."""
        self._settled: tuple[int, float] = (0, float("nan"))
        """(step, seconds) of the last step whose GPU time was read (``step_seconds``)."""
        if self._cuda:
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._end_event = torch.cuda.Event(enable_timing=True)
            self._end_recorded = False

    def start(self, slowdown: float = 1.0) -> None:
        """Mark the start of the forward pass; ``slowdown`` is this step's emulation factor."""
        self._t1 = None
        self.last_bucket_at = None
        self._factor = slowdown
        self._emulated = None
        if self._cuda:
            self._end_recorded = False
            self._start_event.record()
        else:
            self._timer.start()

    def hook(
        self, process_group: dist.ProcessGroup | None, bucket: dist.GradBucket
    ) -> torch.futures.Future[torch.Tensor]:
        """DDP comm hook: timestamp the last bucket (and emulate a slower device there), then
        DDP's own all-reduce (mean)."""
        if bucket.is_last():
            if self._cuda:
                self._end_event.record()
                self._end_recorded = True
            else:
                self._t1 = self._timer.read()
            if self._emulated_run or self._factor != 1.0:
                wall, own = self._real_elapsed()
                self._emulated = emulate_slowdown(self._factor, own, wall)
        reduced = allreduce_hook(process_group, bucket)  # type: ignore[arg-type]
        if bucket.is_last() and not self._cuda:
            self.last_bucket_at = time.perf_counter()
            if self.early is not None:
                self.early.fire(self.elapsed())
        return reduced

    def passes_done(self, ran: bool) -> None:
        """After the rank's last backward of the step (``ran``: it ran any pass). Where the last
        bucket's hook did not fire (a step with a benched rank all-reduces explicitly, after
        this), the time is taken here and a slower device emulated here, before the
        all-reduce, as the hook does. A rank that ran no pass (benched) computed nothing: its
        time is 0 and nothing is emulated (its probe thread's work is not the step's)."""
        if not ran:
            self._emulated = 0.0
        elif self._cuda:
            if not self._end_recorded:
                self._end_event.record()
                self._end_recorded = True
        elif self._t1 is None:
            self._t1 = self._timer.read()
            if self._emulated_run or self._factor != 1.0:
                wall, own = self._t1
                self._emulated = emulate_slowdown(self._factor, own, wall)

    def tally_time(self, step: int) -> tuple[int, float]:
        """``(step it belongs to, seconds)`` for step ``step``'s tally, read without waiting:
        this step's on a CPU rank, the last one ``step_seconds`` read on a GPU rank."""
        if self._cuda:
            return self._settled
        return step, self.elapsed()

    def step_seconds(self, step: int) -> float:
        """Step ``step``'s compute seconds, once its tally was read (its CUDA events are
        complete then, so this does not wait); kept for the next step's tally."""
        seconds = self.elapsed()
        self._settled = (step, seconds)
        return seconds

    def elapsed(self) -> float:
        """Seconds of this rank's forward+backward in the step just run (after backward),
        emulated slowdown included."""
        if self._emulated is not None:
            return self._emulated
        wall, own = self._real_elapsed()
        if self._emulated_run or self._factor != 1.0:  # no bucket seen: emulate here instead
            return emulate_slowdown(self._factor, own, wall)
        return wall

    def _real_elapsed(self) -> tuple[float, float]:
        """(wall, own) seconds of the forward+backward: the own time leaves out waiting for
        other processes on a shared CPU core (see step/slowdown.py); a GPU's is its own."""
        if self._cuda:
            if not self._end_recorded:  # no bucket seen (no gradients): time up to now
                self._end_event.record()
            self._end_event.synchronize()
            seconds = float(self._start_event.elapsed_time(self._end_event)) / 1000.0
            return seconds, seconds
        return self._t1 if self._t1 is not None else self._timer.read()
