"""An island's inner steps: exact data parallelism among the island's ranks.

Inner step ``g`` of an island trains on global step ``g``'s batch of the run's sample order
(``GlobalBatchOrder``), cut between the island's ranks by their shares. Each rank calls
``backward()`` on its summed loss; the island sums the gradients and the loss units in one
all-reduce (nothing for an island of one rank) and divides by the units: the gradient of the
mean over the batch, whatever the cut — the exact mode's promise, kept inside the island.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, fields

import torch
from torch import nn

from trainer.lowcomm.outer import IslandGroups, flat_grads, unflatten_grads
from trainer.lowcomm.plan import RoundPlan
from trainer.settings.train_config import TrainConfig
from trainer.step.amp import autocast
from trainer.step.batch_order import GlobalBatchOrder
from trainer.step.batches import collated
from trainer.step.optim import OptimizerStep
from trainer.step.slowdown import SlowdownSchedule, WorkTimer, emulate_slowdown
from trainer.tasks import Task


@dataclass
class RoundTally:
    """One rank's measurements of a round (gathered as floats)."""

    loss_sum: float = 0.0
    units: float = 0.0
    samples: float = 0.0
    """Items this rank trained on in the round."""
    inner_s: float = 0.0
    """Wall time of the island's inner steps (emulated slowdown included)."""
    inner_cpu_s: float = 0.0
    """This rank's process CPU seconds in those steps (all its threads): over ``inner_s``,
    the cores it got (a host held under its quota by a busy machine shows here)."""
    exchange_s: float = 0.0
    """The exchange's time left exposed at the round's end (with ``outer_overlap``: the wait
    for the last round's exchange, the quantising and the outer step)."""
    in_flight_s: float = 0.0
    """``outer_overlap``: the last round's exchange, from its start until seen complete."""
    stop: float = 0.0
    leave: float = 0.0
    """Live membership: 1.0 when this rank's host asked to leave (``Membership.flags``)."""
    joiners: float = 0.0
    """Live membership, rank 0: the joiners waiting to be let in."""

    def as_list(self) -> list[float]:
        return [float(v) for v in astuple(self)]

    @classmethod
    def from_list(cls, values: Sequence[float]) -> RoundTally:
        return cls(**{f.name: v for f, v in zip(fields(cls), values, strict=True)})


class InnerSteps:
    """This rank's part of its island's inner steps."""

    def __init__(self, config: TrainConfig, *, task: Task, order: GlobalBatchOrder,
                 model: nn.Module, parameters: list[nn.Parameter], optim_step: OptimizerStep,
                 groups: IslandGroups, device: torch.device, rank: int,
                 shares: tuple[int, ...], emulated: bool) -> None:
        """``emulated``: the run emulates slower devices on some rank, so the island's time
        is its emulated compute (trainer/step/slowdown.py), not the wall time, which carries
        the wait for a shared core."""
        self.task, self.order, self.model, self.parameters = task, order, model, parameters
        self.optim_step, self.groups, self.device = optim_step, groups, device
        self.precision = config.precision
        self.shares = shares
        """The island's ranks' shares of each inner step's global batch."""
        self.slowdown = SlowdownSchedule(config.slowdown_for(rank), config.slowdown_at, rank)
        self.emulated = emulated

    def run_round(self, plan: RoundPlan, between: Callable[[], None] = lambda: None
                  ) -> RoundTally:
        """The island's inner steps of ``plan`` (collective within the island only);
        ``between`` is called after each (the overlapped exchange's progress is noted)."""
        tally = RoundTally()
        timer = WorkTimer(cpu=self.device.type == "cpu")
        timer.start()
        cpu_before = time.process_time()
        spent = 0.0
        for step in plan.global_steps(self.groups.index):
            loss_sum, units, seconds = self._step(step)
            tally.loss_sum += loss_sum
            tally.units += units
            tally.samples += self.shares[self.groups.island_rank]
            spent += seconds
            between()
        wall, _ = timer.read()
        tally.inner_s = spent if self.emulated else wall
        tally.inner_cpu_s = time.process_time() - cpu_before
        return tally

    def _step(self, step: int) -> tuple[float, float, float]:
        """Inner step ``step``: (this rank's loss sum, its units, its seconds)."""
        indices = self.order.local_indices(step, self.shares, self.groups.island_rank)
        timer = WorkTimer(cpu=self.device.type == "cpu")
        timer.start()
        batch = collated(self.task, indices.tolist(), self.device)
        with autocast(self.precision, self.device):
            loss_sum, units = self.task.loss(self.model, batch)
        self.optim_step.scale_loss(loss_sum).backward()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        wall, own = timer.read()
        seconds = emulate_slowdown(self.slowdown.factor_at(step), own, wall)
        mine = float(loss_sum.detach())
        if self.groups.group is None:
            island_units = alone_in_island(self.parameters, float(units))
        else:
            flat = flat_grads(self.parameters, float(units))
            self.groups.sum_in_island(flat)
            island_units = unflatten_grads(self.parameters, flat)
        self.optim_step.step(step, island_units)
        return mine, float(units), seconds


def alone_in_island(parameters: Sequence[nn.Parameter], units: float) -> float:
    """An island of one rank: its gradients are already the island's sum, so they stay where
    backward left them instead of a round trip through ``flat_grads``' flat copy (two copies
    of the model every inner step: 0.87-0.95x the CPU per inner step of the 2M-parameter LM
    without it; docs/benchmarks/ci-time.md "Low-communication throughput"). What the copy gives back
    is kept bit for bit for float32 (and narrower) parameters: a parameter without a gradient
    gets zeros (the optimizer then steps it, as after the copy), and the units pass through
    float32. Returns the units."""
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    return float(torch.tensor([units], dtype=torch.float32)[0])
