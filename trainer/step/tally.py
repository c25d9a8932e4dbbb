"""What every rank reports after its backward, exchanged as one tensor, and the division by
the step's global unit count that makes any split exact.

The step's one host read. A rank's loss sum, unit count and "a buffer changed" flag stay on its
device as tensors through the step (no ``float()`` per pass: on a GPU each would wait for the
device and leave it idle while the CPU catches up). ``TallyExchange.start`` packs them with the
compute time and the stop flag into ONE float64 tensor and starts the all-gather of it.
``PendingTallies.global_units`` is the sum over ranks as a device tensor (the gradient is scaled
by it without a host read), and ``PendingTallies.read`` is the only point of a step where the
host waits for the device: on CUDA the gathered tensor is copied into pinned host memory behind
an event right after the gather, so the read waits for the gather alone, not for the optimizer
step queued after it. ``PendingTallies.reads`` counts the reads (the sync-free step test).

Compute time: a CPU rank's is known at the gather (perf_counter). A GPU rank's comes from CUDA
events whose elapsed time can be read without waiting only once the step is over, so its tally
carries the PREVIOUS step's time (trainer/step/clock.py), and ``compute_step`` says which step a
time belongs to: rank 0's balancer pairs each time with the split of that step (the step
before's comes as a ``TimedStep``), so it sees a GPU rank's times a step late.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn


class StepTally(NamedTuple):
    """What one rank reports after its backward (gathered from every rank once per step)."""

    loss_sum: float
    """The rank's loss summed over its loss units."""
    units: float
    """How many loss units (images, target tokens) the rank's batch held."""
    compute_s: float
    """The rank's forward+backward seconds (emulated slowdown included) of ``compute_step``;
    NaN when it has none yet (a GPU rank's first step)."""
    compute_step: float
    """The step ``compute_s`` belongs to: this step on a CPU rank, the previous one on a GPU
    rank (its CUDA events are read a step late)."""
    stop: float
    """1.0 when the rank received SIGINT/SIGTERM: every rank stops after this step."""
    buffers_changed: float
    """1.0 when a forward changed one of the rank's buffers: rank 0's are broadcast after the
    step."""
    exchange_s: float = 0.0
    """The rank's seconds in the PREVIOUS step's gradient exchange after its own compute
    (``TimedStep.exchange_s``: a CPU rank's tally leaves before this step's exchange ends; 0:
    not measured, as on a GPU rank)."""
    leave: float = 0.0
    """1.0 when the rank's host asked to leave (live membership, trainer/membership/): the
    change is agreed at this step's boundary with no extra round trip."""
    joiners: float = 0.0
    """Rank 0: how many joiners wait to be let in at this step's boundary."""


_UNITS = StepTally._fields.index("units")


class ComputeTime(NamedTuple):
    """A rank's compute seconds of one step (trainer/step/clock.py)."""

    step: int
    """The step timed (0: none)."""
    seconds: float
    """Its forward+backward seconds, emulated slowdown included (NaN: none)."""


class PendingTallies:
    """Every rank's tally, being gathered: ``global_units()`` without a host read, ``read()``
    (the step's one host read) for the values."""

    reads = 0
    """How many times ``read`` waited for a device (all instances; tests count syncs)."""

    def __init__(self, mine: torch.Tensor, world: int) -> None:
        self._device = mine.device
        self._out = [mine]
        self._work = None
        """A lone process without a group (a script outside torchrun): its own tally."""
        if dist.is_available() and dist.is_initialized():
            self._out = [torch.empty_like(mine) for _ in range(world)]
            self._work = dist.all_gather(self._out, mine, async_op=True)
        self._gathered: torch.Tensor | None = None
        self._host: torch.Tensor | None = None
        self._ready: torch.cuda.Event | None = None

    def gathered(self) -> torch.Tensor:
        """Every rank's tally, ``(world, fields)`` on the device. On CUDA with NCCL the wait
        is the stream's, not the host's; the copy to pinned host memory starts here."""
        if self._gathered is None:
            if self._work is not None:
                self._work.wait()
            self._gathered = torch.stack(self._out)
            if self._device.type == "cuda":
                self._host = torch.empty(self._gathered.shape, dtype=self._gathered.dtype,
                                         pin_memory=True)
                self._host.copy_(self._gathered, non_blocking=True)
                self._ready = torch.cuda.Event()
                self._ready.record()
        return self._gathered

    def global_units(self) -> torch.Tensor:
        """The step's loss units summed over every rank: a 0-d tensor on the device."""
        return self.gathered()[:, _UNITS].sum()

    def rows(self) -> list[list[float]]:
        """Every rank's gathered values by rank: THE host read of the step (waits for the
        gather only)."""
        gathered = self.gathered()
        PendingTallies.reads += 1
        if self._ready is not None and self._host is not None:
            self._ready.synchronize()
            return self._host.tolist()
        return gathered.tolist()

    def read(self) -> list[StepTally]:
        """Every rank's tally by rank (``rows`` as ``StepTally``s)."""
        return [StepTally(*row) for row in self.rows()]


class TallyExchange:
    """Packs this rank's tally into one device tensor and starts gathering every rank's."""

    def __init__(self, device: torch.device, world: int, stop_requested: Callable[[], bool],
                 buffers_changed: Callable[[], torch.Tensor],
                 membership: Callable[[], tuple[float, float]] | None = None) -> None:
        self.device, self.world = device, world
        self.membership = membership
        """This rank's ``(leave, joiners)`` flags (None: no live membership)."""
        self.stop_requested = stop_requested
        """Whether this rank was asked to stop (a host flag: SIGINT/SIGTERM)."""
        self.buffers_changed = buffers_changed
        """A 0-d device tensor, nonzero when a forward changed a buffer (``BufferSync``)."""

    def start(self, loss_sum: torch.Tensor, units: torch.Tensor, compute: ComputeTime,
              exchange_s: float) -> PendingTallies:
        """Start the all-gather of ``(loss_sum, units, compute, stop, buffers changed,
        exchange, leave, joiners)``.

        ``loss_sum`` and ``units`` are 0-d tensors on the device; ``compute`` comes from the
        clock and ``exchange_s`` is the step before's exchange seconds. Host numbers enter
        through ``torch.full`` (a fill kernel), never through a host-to-device copy (which
        would wait for the device)."""
        host_values = (compute.seconds, float(compute.step),
                       1.0 if self.stop_requested() else 0.0)
        parts = [loss_sum.detach().to(torch.float64), units.to(torch.float64),
                 *(self._scalar(v) for v in host_values),
                 self.buffers_changed().to(torch.float64),
                 self._scalar(exchange_s),
                 *(self._scalar(v) for v in (self.membership() if self.membership
                                             else (0.0, 0.0)))]
        return PendingTallies(torch.stack(parts), self.world)

    def _scalar(self, value: float) -> torch.Tensor:
        return torch.full((), value, dtype=torch.float64, device=self.device)


def divide_by_global_units(
    parameters: Iterable[nn.Parameter], world_size: int, global_units: float | torch.Tensor
) -> None:
    """THE EXACTNESS STEP: make the gradient the mean over every loss unit of the global batch.

    Each rank called backward() on its SUMMED loss, and DDP averaged the gradients over the
    ranks, so every gradient now is ``(sum over all units) / world_size``. Multiplying by
    ``world_size / global_units`` gives ``(1 / global_units) * sum``: the gradient of the loss
    divided by the step's global count of units, whatever the split. (Averaging per-rank MEAN
    losses would over-weight ranks with few units.) The division is applied to the gradient
    rather than to the loss because the count is known only after every rank's forward; a
    collective between forward and backward would make the fast ranks wait mid-step.

    ``global_units`` may be a device tensor (no host read); the factor is computed in float64
    and rounded once to the gradients' compute type, as a Python float would be, and applied
    with one ``torch._foreach_mul_`` per (device, dtype) group instead of a kernel per tensor.
    """
    if isinstance(global_units, torch.Tensor):
        scale: float | torch.Tensor = world_size / global_units.to(torch.float64).clamp(min=1.0)
    else:
        scale = world_size / max(global_units, 1.0)
    for grads in _grad_groups(parameters):
        factor = scale
        if isinstance(scale, torch.Tensor):
            factor = scale.to(device=grads[0].device, dtype=_opmath(grads[0].dtype))
        torch._foreach_mul_(grads, factor)


def _grad_groups(parameters: Iterable[nn.Parameter]) -> list[list[torch.Tensor]]:
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for p in parameters:
        if p.grad is not None:
            groups.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
    return list(groups.values())


def _opmath(dtype: torch.dtype) -> torch.dtype:
    """The type torch's kernels multiply ``dtype`` tensors in (float for the half types)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def timed_steps(tallies: Sequence[StepTally], steps: Sequence[tuple[int, tuple[int, ...]]]
                ) -> Iterator[tuple[int, tuple[int, ...], list[float]]]:
    """``(step, split, every rank's compute seconds of that step)`` for each ``(step, split)``
    of ``steps`` some rank timed (NaN for a rank whose tally times another step: the balancer
    leaves NaN out)."""
    for step, split in steps:
        seconds = [t.compute_s if int(t.compute_step) == step else math.nan for t in tallies]
        if not all(math.isnan(s) for s in seconds):
            yield step, split, seconds
