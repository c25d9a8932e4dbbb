"""The plain-DDP helper: exact uneven shares and corral's events for a script's own loop.

    from trainer.integrations.ddp import Shares
    shares = Shares(len(dataset), global_batch=B, epochs=E)     # before or after the model
    loader = shares.loader(dataset)                             # this rank's share of each step
    loss = shares.loss(loss_fn(model(x), y), model)             # model: the DDP module

It fits the PyTorch DDP tutorial's order: the loader may be built before the DDP module, which
``shares.loss`` takes at its first call (or ``Shares(..., model=ddp)``), and
``loader.sampler.set_epoch(epoch)`` works as with a ``DistributedSampler``, whatever the
script's epoch numbering (the n-th number given is the n-th epoch: ``set_epoch(1)`` for the
first is fine): ``loader.sampler`` is ``shares.sampler``, which yields this rank's index list
of every global step (corral's order: every example once per epoch, every rank the same number
of steps).
``shares.loss`` turns this rank's per-sample MEAN loss into ``local sum x world size / B``:
DDP's gradient average then gives the mean over the whole global batch, as one process would,
whatever the shares. That returned value is for ``backward`` only: log the mean loss passed in
(this rank's), and read the global mean from corral (the console, ``corral report``).

Under corral (``CORRAL_RUN_DIR`` set) the shares follow corral's policy and each step is
reported when the loop asks the sampler for the next one (so use the loader without worker
processes, ``num_workers=0``, the default); without corral the shares are equal and nothing is
written.
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from profiles.user_errors import UsageError
from trainer.dist import on_any_rank
from trainer.integrations.contract import ScriptSettings
from trainer.integrations.ddp_entry import LiveEntry
from trainer.integrations.ddp_live import LiveShares, live_note
from trainer.integrations.run import ScriptRun
from trainer.integrations.shares import RankStepSampler, ShareSchedule
from trainer.step.batch_order import GlobalBatchOrder
from trainer.step.clock import make_clock
from trainer.step.slowdown import emulates


class ShareLoader(DataLoader):
    """A ``DataLoader`` over this rank's share of every step whose ``sampler`` is the share
    sampler, so that ``loader.sampler.set_epoch(epoch)`` works as with a
    ``DistributedSampler`` (a plain ``DataLoader(batch_sampler=...)`` has a default sampler
    there)."""

    def __init__(self, dataset: Dataset[Any], step_sampler: RankStepSampler,
                 **options: Any) -> None:
        self._share_sampler = step_sampler
        super().__init__(dataset, batch_sampler=step_sampler, **options)

    @property
    def sampler(self) -> RankStepSampler:
        """The share sampler (the loader's batch sampler)."""
        return self._share_sampler

    @sampler.setter
    def sampler(self, default: object) -> None:
        """DataLoader's own default sampler, unused beside a batch sampler: dropped."""


def _device(settings: ScriptSettings | None, model: nn.Module | None) -> torch.device:
    """Where this rank computes: the model's device, else the one corral set up."""
    if model is not None:
        return next(model.parameters()).device
    wants_cuda = (settings.device == "cuda" if settings is not None and settings.device
                  else torch.cuda.is_available())
    return torch.device("cuda", torch.cuda.current_device()) if wants_cuda else torch.device("cpu")


class Shares:
    """This rank's share of every global step of ``global_batch`` samples.

    ``Shares(len(dataset), global_batch=B, epochs=E)``; the DDP module comes with the first
    ``loss(..., model)`` or as ``model=``. ``Shares(model, len(dataset), ...)`` works too."""

    def __init__(self, dataset_size: int | nn.Module, legacy_size: int | None = None, *,
                 global_batch: int, epochs: int, seed: int = 0,
                 model: nn.Module | None = None) -> None:
        if isinstance(dataset_size, nn.Module):  # the older order: the model first
            if legacy_size is None:
                raise UsageError("Shares(model, ...) needs the dataset's size next: "
                                 "Shares(len(dataset), global_batch=B, epochs=E)")
            model, dataset_size = dataset_size, legacy_size
        settings = ScriptSettings.from_env()
        order = GlobalBatchOrder(dataset_size, global_batch, seed)
        self.run: ScriptRun | None = None
        self._model: nn.Module | None = None
        if settings is None:
            rank = dist.get_rank() if dist.is_initialized() else 0
            world = dist.get_world_size() if dist.is_initialized() else 1
            self.schedule = ShareSchedule(ScriptSettings(run_dir=""), global_batch=global_batch,
                                          world=world, rank=rank)
            self.sampler = RankStepSampler(order, self.schedule)
            return
        self.settings, self.device = settings, _device(settings, model)
        self.live: LiveShares | None = None
        """With live membership (``CORRAL_MEMBERSHIP_PORT``): this rank's side of the run's
        generations (trainer/integrations/ddp_live.py)."""
        self._entry = LiveEntry(settings, identity={
            "samples": dataset_size, "global_batch": global_batch, "epochs": epochs,
            "seed": seed})
        self.total_steps = epochs * order.steps_per_epoch
        self._loss: torch.Tensor | None = None
        """The last step's mean loss, on the device until the step is reported."""
        self._done = 0
        self.clock = make_clock(self.device, emulated_run=on_any_rank(
            emulates(settings.slowdown), self.device))
        self._named = (type(getattr(model, "module", model)).__name__ if model is not None
                       else Path(sys.argv[0]).name)
        self._dataset = f"{dataset_size} samples"
        if self._entry.joining:  # its place comes with the generation that lets it in
            self.schedule = self._entry.placeholder(global_batch)
            self.sampler = RankStepSampler(order, self.schedule, on_step=self._step_begins)
            self._pending_model = model
            atexit.register(self._finish)
            return
        self.run = ScriptRun(settings, global_batch=global_batch, device=self.device,
                             batch_source="the global_batch given to Shares")
        self.schedule = self.run.schedule
        self.sampler = RankStepSampler(order, self.schedule, on_step=self._step_begins)
        self.live = self._entry.launched(self.run, self.sampler, lambda: self._model,
                                         self.total_steps)
        self.watch(model)
        self.run.start(model=self._named, dataset=self._dataset, step=0,
                       total_steps=self.total_steps, steps_per_epoch=order.steps_per_epoch)
        atexit.register(self._finish)

    def loader(self, dataset: Dataset[Any], **options: Any) -> ShareLoader:
        """A ``DataLoader`` of ``dataset`` over this rank's shares (``options`` as a
        ``DataLoader``'s, less batch size, sampler, shuffle and drop_last)."""
        return ShareLoader(dataset, self.sampler, **options)

    def watch(self, model: nn.Module | None) -> None:
        """Time this rank's own compute on ``model`` (the DDP module), once, before its first
        backward: the clock's hook notes when its last gradient bucket is ready."""
        if self.run is None or model is None or self._model is not None:
            return
        self._model = model
        if isinstance(model, DistributedDataParallel):
            if self.live is not None:  # no bucket reduced alone: layouts differ after a join
                self.clock.reduce = self.live.reduce_for(model)
                note = live_note(model)
                if note is not None and self.run.rank == 0:
                    print(f"corral: {note}: a host leaving or joining breaks it; "
                          "`corral leave --restart` instead", file=sys.stderr, flush=True)
            model.register_comm_hook(None, self.clock.hook)

    def share(self, step: int) -> int:
        """This rank's number of samples in step ``step`` (1-based)."""
        return self.schedule.split_at_quietly(step)[self.schedule.rank]

    def loss(self, mean_loss: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        """This rank's per-sample mean loss, scaled so that DDP's average is the global mean;
        ``model`` (the DDP module, needed once, before the first backward) is timed."""
        self.watch(model)
        share = self.share(self.sampler_step)
        if self.run is not None:  # read when the next step begins: no wait mid-step
            self._loss = mean_loss.detach()
        return mean_loss * (share * self.schedule.world / self.schedule.global_batch)

    @property
    def sampler_step(self) -> int:
        """The step whose indices the sampler handed out last (1-based)."""
        return max(self.schedule.drawn, 1)

    def _step_begins(self, step: int) -> None:
        """The loop asks for step ``step``: report step ``step - 1`` (with live membership,
        then the change it asks for), start the clock. A joiner is let in at its first."""
        if self.run is None:
            self._admit()
            return
        run = self.run
        if self._loss is not None and step - 1 > self._done:
            share = self.share(step - 1)
            rows = run.step_done(step - 1,
                                 epoch=(step - 2) // self.sampler.order.steps_per_epoch,
                                 loss_sum=self._loss * share, units=share, clock=self.clock)
            self._done, self._loss = step - 1, None
            if self.live is not None and not self.live.after_step(step - 1, rows):
                return  # this rank's host left: the sampler hands out nothing more
            self.schedule = run.schedule
        self.clock.start(run.settings.slowdown_of(run.rank))

    def _admit(self) -> None:
        """A joiner, at its first step (its model and optimizer built): wait to be let in,
        take its place and the run's state, then draw from the step after the one it was let
        in at."""
        joined = self._entry.admitted(self.schedule, self.device, self.sampler,
                                      lambda: self._model or self._pending_model,
                                      self.total_steps)
        self.run, self.live = joined.run, joined.live
        self.schedule = self.run.schedule
        self.run.start(model=self._named, dataset=self._dataset, step=joined.step,
                       total_steps=self.total_steps,
                       steps_per_epoch=self.sampler.order.steps_per_epoch)
        self.live.group.admitted()  # the run's state, loaded as the model and optimizer act
        self._done = joined.step
        self.sampler.resume_at = joined.step + 1
        self.clock.start(self.run.settings.slowdown_of(self.run.rank))

    def _finish(self) -> None:
        """At exit: the end event (``failed`` when the script is ending on an exception)."""
        if self.run is None:
            return
        failure: Any = getattr(sys, "last_value", None)
        if self.live is not None and self.live.progress.left:
            self.run.end("left")
        elif failure is not None:
            self.run.end("failed", error=f"{type(failure).__name__}: {failure}".splitlines()[0])
        else:
            self.run.end("completed")

