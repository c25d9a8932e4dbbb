"""One rank's share of a step: micro-batch passes with gradient accumulation, one all-reduce.

A share larger than the rank's micro-batch runs as several forward/backward passes over
consecutive slices of it. The gradients of the SUMMED losses add up in ``.grad``, so the sum
over the share is the same whatever the slicing; DDP's ``no_sync`` keeps the all-reduce out of
every pass but the last, so the step still has one all-reduce. Exactness (fp32) is untouched:
the division by the step's global unit count comes after, as before (trainer/step/tally.py).

A rank may have a share of 0 (the balancer lets a rank sit out). It runs no pass and takes no
part in the gradient exchange (trainer/step/exchange.py). DDP's reducer only all-reduces from
inside a backward, over the world, so in a step whose split holds a 0 the active ranks
accumulate locally (``no_sync`` for all passes) and then all-reduce the gradients once,
explicitly, over the active ranks' group: the arithmetic is the same (a sum over the ranks,
divided by the world size, which the division by the global unit count undoes).

Buffers (BatchNorm running statistics) are kept equal to rank 0's by ``BufferSync``, not by DDP
at every forward (ranks with different numbers of passes would call different numbers of
broadcasts): after a step in which a forward changed a buffer on some rank, rank 0's are
broadcast, at the point where the ranks already meet. A model whose buffers never change (the
rotary tables of a language model) pays no collective for them.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from trainer.step.batch_order import GlobalBatchOrder
from trainer.step.batches import collated
from trainer.step.clock import ComputeClock
from trainer.step.exchange import ActiveSet
from trainer.step.tally import StepTally
from trainer.tasks import Task

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""The autocast dtype of each reduced ``--precision``."""


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The forward pass's precision: autocast on the rank's device, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def micro_slices(indices: Sequence[int], micro: int | None) -> list[Sequence[int]]:
    """``indices`` in consecutive slices of at most ``micro`` (one slice without a limit)."""
    if not indices:
        return []
    size = micro or len(indices)
    return [indices[i:i + size] for i in range(0, len(indices), size)]


StartTally = Callable[[float, float, float], Callable[[], list[StepTally]]]
"""Starts the tally all-gather from ``(loss sum, loss units, compute seconds)``."""


class ShareRunner:
    """Runs this rank's share of each step and leaves the summed gradient in ``.grad``."""

    def __init__(self, *, ddp: nn.Module, model: nn.Module, task: Task,
                 order: GlobalBatchOrder, parameters: list[nn.Parameter], rank: int,
                 world: int, device: torch.device, precision: str, clock: ComputeClock,
                 scale_loss: Callable[[torch.Tensor], torch.Tensor],
                 prefetched: Callable[[int, Sequence[int]], Any] | None = None,
                 active: ActiveSet | None = None) -> None:
        self.ddp, self.model, self.task, self.order = ddp, model, task, order
        self.parameters, self.rank, self.world, self.device = parameters, rank, world, device
        self.precision, self.clock, self.scale_loss = precision, clock, scale_loss
        self.prefetched = prefetched
        """``prefetched(step, split)``: the whole share's batch, made ahead
        (trainer/step/prefetch.py); used by a rank without a micro-batch (its share is always
        one pass)."""
        self.active = active
        """The active set: who takes part in the exchange (None: every rank, always)."""
        self.exchanged_s = 0.0
        """Wall seconds this rank spent in the last step's gradient exchange after its own
        compute (the all-reduce, or DDP's from the last bucket on; 0: not measured). The
        rank that arrives last waits for nobody: the least over the ranks is the exchange
        (reported with the next step's tally; trainer/balance/cost.py)."""

    def run(self, step: int, split: Sequence[int], micro: int | None, slowdown: float,
            start_tally: StartTally) -> Callable[[], list[StepTally]]:
        """Run this rank's share of ``step``; returns the wait for every rank's tally.

        ``start_tally(loss sum, loss units, compute seconds)`` starts the tally all-gather. On
        a CPU rank it starts from inside the last backward, right after the gradient
        all-reduce was issued, so that the two collectives travel together instead of one
        after the other (the order of collectives is the same on every rank either way)."""
        indices = self.order.local_indices(step, split, self.rank).tolist()
        # Some rank runs no backward: all-reduce explicitly (above).
        explicit = 0 in self.order.counts(step, split)
        slices = micro_slices(indices, micro)
        self.clock.start(slowdown)
        loss_total, units_total = 0.0, 0.0
        started: list[Callable[[], list[StepTally]]] = []
        bucket_at: list[float] = []
        for i, part in enumerate(slices):
            last = i == len(slices) - 1 and not explicit
            if self.prefetched is not None and micro is None:
                batch = self.prefetched(step, split)
            else:
                batch = collated(self.task, part, self.device)
            with self._sync_if(last):
                with autocast(self.precision, self.device):
                    loss_sum, units = self.task.loss(self.ddp, batch)
                if last and self.device.type == "cpu":
                    self.clock.on_last_bucket = functools.partial(
                        _start_early, started, bucket_at, start_tally,
                        loss_total + float(loss_sum.detach()), units_total + float(units))
                self.scale_loss(loss_sum).backward()
            loss_total += float(loss_sum.detach())
            units_total += float(units)
        self.clock.on_last_bucket = None
        compute_s = self.clock.elapsed()  # includes the emulated slowdown, before the all-reduce
        compute_end = bucket_at[0] if bucket_at else time.perf_counter()
        # -- the active set (trainer/step/exchange.py): a benched rank leaves the exchange and
        # reports its latest probe's seconds (0: none) instead of a compute time.
        if self.active is not None and self.active.benched(split):
            compute_s = _probed(self.active)
        elif explicit:
            all_reduce_mean(self.parameters, self.world,
                            self.active.group(split) if self.active is not None else None)
        self.exchanged_s = (time.perf_counter() - compute_end
                            if indices and (bucket_at or explicit) else 0.0)
        return started[0] if started else start_tally(loss_total, units_total, compute_s)

    def _sync_if(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        no_sync: Callable[[], contextlib.AbstractContextManager[Any]] = self.ddp.no_sync  # type: ignore[assignment]
        return contextlib.nullcontext() if sync else no_sync()


def _start_early(started: list[Callable[[], list[StepTally]]], bucket_at: list[float],
                 start_tally: StartTally, loss_sum: float, units: float,
                 compute_s: float) -> None:
    bucket_at.append(time.perf_counter())
    started.append(start_tally(loss_sum, units, compute_s))


def _probed(active: ActiveSet) -> float:
    probe = active.probe()
    if probe is None:
        return 0.0
    seconds = probe.take()
    probe.tick()
    return seconds


def all_reduce_mean(parameters: Sequence[nn.Parameter], world: int,
                    process_group: Any = None) -> None:
    """Every parameter's gradient summed over ``process_group``'s ranks (None: the world) and
    divided by ``world`` (a missing one counts as zero), one all-reduce per dtype: what DDP's
    reducer does, for steps where some rank has no backward."""
    for group in _by_dtype(parameters):
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in group]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=process_group)
        flat.div_(world)
        for p, chunk in zip(group, _unflatten(flat, group), strict=True):
            p.grad = chunk


class BufferSync:
    """Keeps every rank's buffers equal to rank 0's, paying a broadcast only after a step that
    changed one.

    A change is found by comparing with a copy taken at the last sync: in-place kernels (the
    BatchNorm statistics) do not bump a tensor's version counter, so versions cannot tell. DDP
    has broadcast rank 0's buffers when it wrapped the model, and a resumed run loads the same
    checkpoint on every rank, so the ranks start equal.
    """

    def __init__(self, model: nn.Module) -> None:
        self.buffers = list(model.buffers())
        self.synced = [b.detach().clone() for b in self.buffers]

    def changed(self) -> bool:
        """Has a buffer of this rank changed since the last sync (NaN counts as changed)?

        One comparison per buffer on its device, and one read of the combined answer: on a GPU
        a read per buffer would wait for the device once per buffer."""
        if not self.buffers:
            return False
        differs = [(b != copy).any() for b, copy in zip(self.buffers, self.synced, strict=True)]
        return bool(torch.stack(differs).any())

    def sync(self, src: int = 0) -> None:
        """Rank ``src``'s buffers on every rank (collective: every rank calls it at the same
        step; ``src`` is an active rank)."""
        broadcast_buffers(self.buffers, src)
        for b, copy in zip(self.buffers, self.synced, strict=True):
            copy.copy_(b.detach())


def broadcast_buffers(buffers: Sequence[torch.Tensor], src: int = 0) -> None:
    """Rank ``src``'s ``buffers`` on every rank (one broadcast per dtype; nothing without
    buffers)."""
    for group in _by_dtype(buffers):
        flat = torch.cat([b.detach().reshape(-1) for b in group])
        dist.broadcast(flat, src=src)
        with torch.no_grad():
            for b, chunk in zip(group, _unflatten(flat, group), strict=True):
                b.copy_(chunk)


def _by_dtype(tensors: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    yield from groups.values()


def _unflatten(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
    offset = 0
    for t in like:
        yield flat[offset:offset + t.numel()].view_as(t)
        offset += t.numel()
