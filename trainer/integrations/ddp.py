"""The plain-DDP helper: exact uneven shares and corral's events for a script's own loop.

    from trainer.integrations.ddp import Shares
    shares = Shares(model, len(dataset), global_batch=B, epochs=E)   # model: the DDP module
    loader = DataLoader(dataset, batch_sampler=shares.sampler)        # this rank's indices
    loss = shares.loss(loss_fn(model(x), y))                          # exact under any split

``shares.sampler`` yields this rank's index list of every global step (corral's order: every
example once per epoch, every rank the same number of steps). ``shares.loss`` turns this rank's
per-sample MEAN loss into ``local sum x world size / B``: DDP's gradient average then gives the
mean over the whole global batch, as one process would, whatever the shares.

Under corral (``CORRAL_RUN_DIR`` set) the shares follow corral's policy and each step is
reported when the loop asks the sampler for the next one (so use the loader without worker
processes, ``num_workers=0``, the default); without corral the shares are equal and nothing is
written.
"""

from __future__ import annotations

import atexit
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainer.dist import on_any_rank
from trainer.integrations.contract import ScriptSettings
from trainer.integrations.run import ScriptRun
from trainer.integrations.shares import RankStepSampler, ShareSchedule
from trainer.step.batch_order import GlobalBatchOrder
from trainer.step.clock import ComputeClock
from trainer.step.slowdown import emulates


class Shares:
    """This rank's share of every global step of ``global_batch`` samples."""

    def __init__(self, model: nn.Module, dataset_size: int, *, global_batch: int, epochs: int,
                 seed: int = 0) -> None:
        settings = ScriptSettings.from_env()
        device = next(model.parameters()).device
        order = GlobalBatchOrder(dataset_size, global_batch, seed)
        self.run: ScriptRun | None = None
        if settings is None:
            rank = dist.get_rank() if dist.is_initialized() else 0
            world = dist.get_world_size() if dist.is_initialized() else 1
            self.schedule = ShareSchedule(ScriptSettings(run_dir=""), global_batch=global_batch,
                                          world=world, rank=rank)
            self.sampler = RankStepSampler(order, self.schedule)
            return
        self.run = ScriptRun(settings, global_batch=global_batch, device=device,
                             batch_source="the global_batch given to Shares")
        self.schedule = self.run.schedule
        self.sampler = RankStepSampler(order, self.schedule, on_step=self._step_begins)
        self.clock = ComputeClock(device, emulated_run=on_any_rank(
            emulates(settings.slowdown), device))
        if isinstance(model, DistributedDataParallel):
            model.register_comm_hook(None, self.clock.hook)
        self._loss: float | None = None
        self._done = 0
        self.run.start(model=type(getattr(model, "module", model)).__name__,
                       dataset=f"{dataset_size} samples", step=0,
                       total_steps=epochs * order.steps_per_epoch,
                       steps_per_epoch=order.steps_per_epoch)
        atexit.register(self._finish)

    def share(self, step: int) -> int:
        """This rank's number of samples in step ``step`` (1-based)."""
        return self.schedule.split_at_quietly(step)[self.schedule.rank]

    def loss(self, mean_loss: torch.Tensor) -> torch.Tensor:
        """This rank's per-sample mean loss, scaled so that DDP's average is the global mean."""
        share = self.share(self.sampler_step)
        if self.run is not None:
            self._loss = float(mean_loss.detach())
        return mean_loss * (share * self.schedule.world / self.schedule.global_batch)

    @property
    def sampler_step(self) -> int:
        """The step whose indices the sampler handed out last (1-based)."""
        return max(self.schedule.drawn, 1)

    def _step_begins(self, step: int) -> None:
        """The loop asks for step ``step``: report step ``step - 1``, start the clock."""
        run = self.run
        assert run is not None
        if self._loss is not None and step - 1 > self._done:
            share = self.share(step - 1)
            run.step_done(step - 1, epoch=(step - 2) // self.sampler.order.steps_per_epoch,
                          loss_sum=self._loss * share, units=share,
                          compute_s=self.clock.elapsed())
            self._done, self._loss = step - 1, None
        self.clock.start(run.settings.slowdown_of(run.rank))

    def _finish(self) -> None:
        """At exit: the end event (``failed`` when the script is ending on an exception)."""
        if self.run is None:
            return
        failure: Any = getattr(sys, "last_value", None)
        if failure is not None:
            self.run.end("failed", error=f"{type(failure).__name__}: {failure}".splitlines()[0])
        else:
            self.run.end("completed")

