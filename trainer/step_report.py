"""The one step reporter: a finished step's raw measurements become this rank's step event;
and the one builder of a rank's start event and of a rebalance event.

corral's own loop (``trainer/exact_loop.py``), its local-exchange loop (``trainer/lowcomm``) and a
user's script under corral (``trainer/integrations/run.py``) all report through ``report_step``,
``report_start`` and ``report_rebalance``, so an event carries the same fields whichever wrote
it. It carries measurements only (local batch, loss sum and
units, compute and step seconds, tokens...): every figure derived from them (a rank's samples/s,
the cluster's, the ideal, efficiency) is defined once, in ``figures/metrics.py``, and
read through the reducer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trainer.balance.config import Decision
from trainer.event_log import EventWriter
from trainer.events import RebalanceEvent, StartEvent, StepEvent


@dataclass(frozen=True, kw_only=True)
class LossTally:
    """One rank's loss over a step: the sum over its loss units, and how many units."""

    loss_sum: float
    """Σ of the per-unit losses (images, or target tokens for a language model)."""
    units: float
    """How many loss units the sum is over."""

    @property
    def mean(self) -> float:
        """The mean loss per unit (0 units: the sum itself, which is then 0)."""
        return self.loss_sum / max(self.units, 1)


@dataclass(frozen=True, kw_only=True)
class OptimizerFacts:
    """What the optimizer step did, as the step event reports it (all optional)."""

    lr: float | None = None
    """The learning rate the step used."""
    grad_norm: float | None = None
    """The global gradient norm before clipping (only with clipping)."""
    scaler_skipped: bool = False
    """fp16: the gradient scaler skipped this step."""
    loss_scale: float | None = None
    """fp16: the gradient scaler's scale after the step."""


NO_OPTIMIZER_FACTS = OptimizerFacts()
"""A step whose optimizer reported nothing beyond the update itself."""


def global_loss_of(tallies: Sequence[LossTally]) -> float:
    """The mean loss over every rank's loss units of the step."""
    return sum(t.loss_sum for t in tallies) / max(sum(t.units for t in tallies), 1)


def report_step(events: EventWriter, *, rank: int, step: int, epoch: int, local_batch: int,
                tallies: Sequence[LossTally], compute_s: float, step_s: float,
                optimizer: OptimizerFacts = NO_OPTIMIZER_FACTS, passes: int | None = None,
                tokens: int | None = None) -> StepEvent:
    """Emit rank ``rank``'s event of ``step`` (``tallies``: every rank's loss, in rank order;
    rank 0 adds the step's global loss) and return it."""
    event = StepEvent(
        t=time.time(), rank=rank, step=step, epoch=epoch, local_batch=local_batch,
        loss=tallies[rank].mean, loss_units=int(tallies[rank].units), compute_s=compute_s,
        step_s=step_s, global_loss=global_loss_of(tallies) if rank == 0 else None,
        lr=optimizer.lr, grad_norm=optimizer.grad_norm,
        scaler_skipped=optimizer.scaler_skipped, loss_scale=optimizer.loss_scale,
        passes=passes, tokens=tokens)
    events.emit(event)
    return event


def report_start(events: EventWriter, *, rank: int, world: int, host: str,
                 **loop: Any) -> None:
    """Emit this rank's start event: what every rank's start says of its process (the time, its
    local rank, pid and threads) with what its loop knows (``loop``: ``StartEvent``'s fields)."""
    events.emit(StartEvent(
        t=time.time(), rank=rank, world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")), host=host, pid=os.getpid(),
        threads=torch.get_num_threads(), **loop))


def report_rebalance(events: EventWriter, decision: Decision, *, step: int,
                     previous: tuple[int, ...], split: tuple[int, ...], policy: str) -> None:
    """Rank 0: emit the rebalance event of ``decision``, whose ``split`` (which replaces
    ``previous``) trains from ``step`` on."""
    events.emit(RebalanceEvent(
        t=time.time(), rank=0, step=step, previous=previous, split=split,
        reason=decision.reason, predicted_gain=decision.predicted_gain, times=decision.times,
        policy=policy, compute_s=decision.compute_s, exchange_s=decision.exchange_s))
