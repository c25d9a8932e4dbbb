"""What every rank reports after its backward, and the division by the step's global unit
count that makes any split exact."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import nn

from trainer.dist import start_all_gather_floats


class StepTally(NamedTuple):
    """What one rank reports after its backward (gathered from every rank once per step)."""

    loss_sum: float
    """The rank's loss summed over its loss units."""
    units: float
    """How many loss units (images, target tokens) the rank's batch held."""
    compute_s: float
    """The rank's forward+backward seconds (emulated slowdown included)."""
    stop: float
    """1.0 when the rank received SIGINT/SIGTERM: every rank stops after this step."""
    buffers_changed: float
    """1.0 when a forward changed one of the rank's buffers: rank 0's are broadcast after the
    step."""
    exchange_s: float = 0.0
    """The rank's seconds in the PREVIOUS step's gradient exchange after its own compute
    (``ShareRunner.exchanged_s``; the tally leaves before this step's exchange ends)."""


def start_gather_tallies(
    mine: StepTally, device: torch.device
) -> Callable[[], list[StepTally]]:
    """Start gathering every rank's tally; call the result to wait for the list (by rank)."""
    wait = start_all_gather_floats(list(mine), device)
    return lambda: [StepTally(*row) for row in wait()]


def divide_by_global_units(
    parameters: Iterable[nn.Parameter], world_size: int, global_units: float
) -> None:
    """THE EXACTNESS STEP: make the gradient the mean over every loss unit of the global batch.

    Each rank called backward() on its SUMMED loss, and DDP averaged the gradients over the
    ranks, so every gradient now is ``(sum over all units) / world_size``. Multiplying by
    ``world_size / global_units`` gives ``(1 / global_units) * sum``: the gradient of the loss
    divided by the step's global count of units, whatever the split. (Averaging per-rank MEAN
    losses would over-weight ranks with few units.) The division is applied to the gradient
    rather than to the loss because the count is known only after every rank's forward; a
    collective between forward and backward would make the fast ranks wait mid-step.
    """
    scale = world_size / max(global_units, 1.0)
    for p in parameters:
        if p.grad is not None:
            p.grad.mul_(scale)
