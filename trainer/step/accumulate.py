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
divided by the world size, which the division by the global unit count undoes). A rank alone
(in the world or in its active set) runs no all-reduce at all.

Buffers (BatchNorm running statistics) are kept equal to an active rank's by ``BufferSync``
(trainer/step/flat_collectives.py), not by DDP
at every forward (ranks with different numbers of passes would call different numbers of
broadcasts): after a step in which a forward changed a buffer on some rank, the lowest active
rank's are broadcast, at the point where the ranks already meet. A model whose buffers never
change (the rotary tables of a language model) pays no collective for them.

The interface, as the exact loop's ``train_step`` reads it: ``ShareRunner.run(step, split,
micro, slowdown, reported_exchange_s)`` runs this rank's passes and leaves the all-reduced
gradient (the sum over ranks divided by the world size) in ``.grad``, and returns what it
measured as ``ShareTotals``: the share's loss and units as device tensors (nothing in it reads
the device), its exchange seconds, and the tally gather a CPU rank's clock started.
``BufferSync.changed()`` is a device flag for the tally and ``BufferSync.sync()`` the broadcast
the step does when some rank's flag was set.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from trainer.step.amp import autocast
from trainer.step.batch_order import GlobalBatchOrder
from trainer.step.batches import collated
from trainer.step.clock import EarlyTally, StepClock
from trainer.step.exchange import ActiveSet
from trainer.step.flat_collectives import all_reduce_mean
from trainer.step.shards import ShardedState
from trainer.step.tally import PendingTallies, TallyExchange
from trainer.tasks import Task


def micro_slices(indices: Sequence[int], micro: int | None) -> list[Sequence[int]]:
    """``indices`` in consecutive slices of at most ``micro`` (one slice without a limit)."""
    if not indices:
        return []
    size = micro or len(indices)
    return [indices[i:i + size] for i in range(0, len(indices), size)]


class ShareTotals(NamedTuple):
    """What running this rank's share of a step measured."""

    loss_sum: torch.Tensor
    """The loss summed over the share's loss units (float64: the passes add up exactly as the
    Python floats they once were)."""
    units: torch.Tensor
    """How many loss units the share held (float64)."""
    probed_s: float | None = None
    """A benched rank's newest probe seconds, reported instead of a compute time (0.0: no new
    probe); None on a rank that computed (trainer/step/exchange.py)."""
    exchanged_s: float = 0.0
    """Wall seconds this rank spent in the step's gradient exchange after its own compute (the
    all-reduce, or DDP's from the last bucket on; 0: not measured). The rank that arrives last
    waits for nobody: the least over the ranks is the exchange (reported with the next step's
    tally; trainer/balance/cost.py)."""
    gather: PendingTallies | None = None
    """The step's tally all-gather, when the clock's hook started it (the runner's
    ``EarlyTally``, on a CPU rank); None: the trainer starts it."""


class ShareRunner:
    """Runs this rank's share of each step and leaves the summed gradient in ``.grad``.

    Reads nothing back from the device: the totals stay tensors (see trainer/step/tally.py)."""

    def __init__(self, *, ddp: nn.Module, model: nn.Module, task: Task,
                 order: GlobalBatchOrder, parameters: list[nn.Parameter], rank: int,
                 world: int, device: torch.device, precision: str, clock: StepClock,
                 tallies: TallyExchange, scale_loss: Callable[[torch.Tensor], torch.Tensor],
                 prefetched: Callable[[int, Sequence[int]], Any] | None = None,
                 active: ActiveSet | None = None, shards: ShardedState | None = None
                 ) -> None:
        self.ddp, self.model, self.task, self.order = ddp, model, task, order
        self.shards = shards
        """The sharded state whose exchange every rank runs after its passes (None:
        replicated, DDP's or the explicit all-reduce)."""
        self.parameters, self.rank, self.world, self.device = parameters, rank, world, device
        self.precision, self.clock, self.scale_loss = precision, clock, scale_loss
        early = EarlyTally(tallies)
        self.early = early if clock.fire_at_last_bucket(early) else None
        """The step's tally gather, started by the clock's last-bucket hook where the clock
        knows the compute time there (a CPU rank's); None: the trainer starts it."""
        self.prefetched = prefetched
        """``prefetched(step, split)``: the whole share's batch, made ahead
        (trainer/step/prefetch.py); used by a rank without a micro-batch (its share is always
        one pass)."""
        self.active = active
        """The active set: who takes part in the exchange (None: every rank, always)."""

    def run(self, step: int, split: Sequence[int], micro: int | None, slowdown: float,
            reported_exchange_s: float) -> ShareTotals:
        """Run this rank's share of ``step``: forward and backward of every pass, the
        gradient all-reduce included; returns what it measured.

        On a CPU rank the runner's ``EarlyTally`` is armed before the last backward with
        ``reported_exchange_s`` (the step before's exchange seconds, which this step's
        tally carries), so its hook starts the tally all-gather right after the last bucket's
        all-reduce."""
        indices = self.order.local_indices(step, split, self.rank).tolist()
        # Some rank runs no backward: all-reduce explicitly (above). Alone in the world, no
        # all-reduce at all: DDP's reducer would still run one over a group of one.
        # Sharded state (trainer/step/shards.py): always its own exchange, every rank.
        shards = self.shards
        explicit = 0 in self.order.counts(step, split) or self.world == 1 or shards is not None
        slices = micro_slices(indices, micro)
        self.clock.start(slowdown)
        totals = _Totals(self.device)
        for i, part in enumerate(slices):
            last = i == len(slices) - 1 and not explicit
            if self.prefetched is not None and micro is None:
                batch = self.prefetched(step, split)
            else:
                batch = collated(self.task, part, self.device)
            with self._sync_if(last):
                with autocast(self.precision, self.device):
                    loss_sum, units = self.task.loss(self.ddp, batch)
                totals.add(loss_sum, units)
                if last and self.early is not None:
                    self.early.arm(step, *totals.now(), reported_exchange_s)
                if shards is not None and i == len(slices) - 1:
                    shards.arm()  # stage 2: buckets reduced and freed as this backward fills them
                self.scale_loss(loss_sum).backward()
        self.clock.passes_done(bool(slices))
        compute_end = self.clock.last_bucket_at or time.perf_counter()
        # -- the active set (trainer/step/exchange.py): a benched rank leaves the exchange and
        # reports its latest probe's seconds (0: none) instead of a compute time.
        probed_s = None
        if self.active is not None and self.active.benched(split):
            probed_s = _probed(self.active)
        if shards is not None:
            shards.reduce_gradients()
        elif probed_s is None and explicit:
            all_reduce_mean(self.parameters, self.world,
                            self.active.group(split) if self.active is not None else None)
        # The exchange's wall seconds after this rank's compute, where the clock can see its
        # end (StepClock.times_exchange).
        measured = indices and self.clock.times_exchange and (
            self.clock.last_bucket_at is not None or explicit)
        exchanged_s = time.perf_counter() - compute_end if measured else 0.0
        gather = self.early.take() if self.early is not None else None
        return ShareTotals(*totals.now(), probed_s=probed_s, exchanged_s=exchanged_s,
                           gather=gather)

    def _sync_if(self, sync: bool) -> contextlib.AbstractContextManager[Any]:
        no_sync: Callable[[], contextlib.AbstractContextManager[Any]] | None = getattr(
            self.ddp, "no_sync", None)  # None: the bare model of a sharded run
        return contextlib.nullcontext() if sync or no_sync is None else no_sync()


class _Totals:
    """Loss and unit sums over a share's passes, without reading the device: the loss adds up
    in float64 on the device; a unit count given as a Python number adds up on the host and
    one given as a tensor on the device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.device_units = torch.zeros((), dtype=torch.float64, device=device)
        self.host_units = 0.0

    def add(self, loss_sum: torch.Tensor, units: int | float | torch.Tensor) -> None:
        self.loss = self.loss + loss_sum.detach().to(torch.float64)
        if isinstance(units, torch.Tensor) and units.device.type != "cpu":
            self.device_units = self.device_units + units.detach().to(self.device, torch.float64)
        else:  # a host number (a CPU tensor's read waits for no device)
            self.host_units += float(units)

    def now(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss sum, units) so far, as 0-d float64 tensors on the device."""
        return self.loss, self.device_units + self.host_units


def _probed(active: ActiveSet) -> float:
    probe = active.probe()
    if probe is None:
        return 0.0
    seconds = probe.take()
    probe.tick()
    return seconds
