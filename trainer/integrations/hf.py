"""The Hugging Face ``Trainer`` / TRL opt-in: two added lines in the user's script.

    from trainer.integrations.hf import corral
    trainer = corral(trainer)          # after building the Trainer / SFTTrainer, before train()

Run by corral (``CORRAL_RUN_DIR`` set, see ``contract.py``), the trainer then (1) cuts every
global batch (``per_device_train_batch_size`` x world size x ``gradient_accumulation_steps``)
into corral's per-rank shares, which corral's policy may change while it runs, every rank taking
the same number of steps and every example once per epoch; and (2) writes corral's typed events
(start, step, rebalance, eval, checkpoint, end). Not run by corral, ``corral`` returns the
trainer untouched.

Why a class change and not only a callback: the shares need the trainer's own data loader
(``get_train_dataloader``) and its step (``training_step``, for the per-rank loss and compute
time); a callback sees neither. The instance's class becomes a subclass of its own class, so a
user's ``Trainer`` subclass keeps every override.

Exactness: with token-averaged loss (``average_tokens_across_devices``, the default) the Trainer
divides each rank's summed loss by the step's token count over all ranks and multiplies by the
number of processes, which DDP's averaging undoes: the gradient is the mean over the global
batch's tokens whatever the shares. ``exactness`` says when that does not hold.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from trainer.dist import on_any_rank
from trainer.events import EndStatus
from trainer.integrations.contract import ScriptSettings
from trainer.integrations.hf_checkpoints import SavedHere, complete, mark_saved
from trainer.integrations.rank_setup import precision_note
from trainer.integrations.run import ScriptRun
from trainer.integrations.shares import GlobalStepSampler
from trainer.step.batch_order import GlobalBatchOrder
from trainer.step.clock import StepClock, make_clock
from trainer.step.slowdown import emulates

TRUSTED_LOSS_MODULES = ("transformers.", "trl.")
"""Packages whose ``compute_loss`` keeps the token average over every rank."""


def corral(trainer: Any) -> Any:
    """``trainer`` with corral's shares and events when run by corral; else ``trainer`` as is."""
    settings = ScriptSettings.from_env()
    if settings is None:
        return trainer
    from transformers import TrainerCallback

    cls = type(trainer)
    trainer.__class__ = type(cls.__name__, (_CorralShares, cls), {})
    trainer._corral = _HFRank(settings, trainer)
    callback = type("CorralEvents", (_CorralEvents, TrainerCallback), {})(trainer._corral)
    trainer.add_callback(callback)
    return trainer


def exactness(trainer: Any) -> tuple[bool, str]:
    """``(exact, why not)``: whether any split gives the same parameters as one process."""
    args = trainer.args
    if getattr(trainer, "compute_loss_func", None) is not None:
        return False, ("a compute_loss_func is set: exact only when it sums the loss and divides "
                       "by num_items_in_batch")
    for klass in type(trainer).__mro__:
        if "compute_loss" in vars(klass) and klass.__name__ != "_CorralShares":
            module = klass.__module__ + "."
            if not module.startswith(TRUSTED_LOSS_MODULES):
                return False, (f"{klass.__name__}.compute_loss is the script's own: corral "
                               "cannot tell that it averages over every rank's tokens")
            break
    if not getattr(args, "average_tokens_across_devices", False):
        return False, "average_tokens_across_devices is off: each rank's loss is its own mean"
    if not getattr(trainer, "model_accepts_loss_kwargs", False):
        return False, ("the model takes no num_items_in_batch: each rank's loss is its own "
                       "mean")
    if args.bf16 or args.fp16:
        return False, (f"{'bf16' if args.bf16 else 'fp16'} autocast rounds each rank's share "
                       "on its own: a different split gives slightly different parameters")
    return True, ""


class _HFRank:
    """What the opt-in keeps for one rank: its ``ScriptRun`` and the step being accumulated."""

    def __init__(self, settings: ScriptSettings, trainer: Any) -> None:
        self.settings, self.trainer = settings, trainer
        self.run: ScriptRun | None = None
        self.sampler: GlobalStepSampler | None = None
        self.clock: StepClock | None = None
        self.resumed_from: str | None = None
        # The step's sums stay on the device (tensors) until the step's one gather reads them.
        self.returned: float | torch.Tensor = 0.0
        """The Trainer's returned losses, summed over the step's rounds."""
        self.units: float | torch.Tensor = 0.0
        """This rank's target tokens over the step's rounds."""
        self.global_units: Any = None
        """The Trainer's ``num_items_in_batch`` (every rank's tokens): a tensor, a number or
        None."""
        self.rounds = 0

    def build(self) -> ScriptRun:
        """The run (once the process group exists: when the train loader is built)."""
        if self.run is None:
            args = self.trainer.args
            rounds = args.gradient_accumulation_steps
            ahead = (args.dataloader_num_workers * (args.dataloader_prefetch_factor or 2)
                     if args.dataloader_num_workers else 0)
            self.run = ScriptRun(
                self.settings, device=args.device, min_share=rounds,
                global_batch=args.per_device_train_batch_size * args.world_size * rounds,
                lead=2 + math.ceil(ahead / rounds),
                batch_source=f"per_device_train_batch_size {args.per_device_train_batch_size} x "
                             f"{args.world_size} ranks x gradient_accumulation_steps {rounds}")
        return self.run

    def step_started(self, model: Any) -> None:
        """The first round of a step: start this rank's compute clock."""
        if self.clock is None:
            device = self.trainer.args.device
            self.clock = make_clock(device, emulated_run=on_any_rank(
                emulates(self.settings.slowdown), device))
            if isinstance(model, DistributedDataParallel):
                model.register_comm_hook(None, self.clock.hook)
        run = self.build()
        self.clock.start(self.settings.slowdown_of(run.rank))
        self.returned = self.units = 0.0
        self.rounds = 0

    def round_done(self, returned: torch.Tensor, inputs: dict[str, Any],
                   num_items_in_batch: Any) -> None:
        """One round of the step: its loss and tokens added on the device (no host read)."""
        self.returned = self.returned + returned.detach().to(torch.float64)
        self.units = self.units + _target_tokens(self.trainer, inputs)
        self.global_units = num_items_in_batch
        self.rounds += 1


class _CorralShares:
    """Mixed in before the user's trainer class (``corral``)."""

    _corral: _HFRank

    def get_train_dataloader(self) -> DataLoader:
        corral_rank = self._corral
        run = corral_rank.build()
        args = self.args  # type: ignore[attr-defined]
        dataset, collator = self.train_dataset, self.data_collator  # type: ignore[attr-defined]
        try:
            import datasets
            is_hf_dataset = isinstance(dataset, datasets.Dataset)
        except ImportError:
            is_hf_dataset = False
        if is_hf_dataset:
            dataset = self._remove_unused_columns(dataset, description="training")  # type: ignore[attr-defined]
        else:
            collator = self._get_collator_with_removed_columns(collator, description="training")  # type: ignore[attr-defined]
        order = GlobalBatchOrder(len(dataset), run.global_batch,
                                 args.data_seed if args.data_seed is not None else args.seed)
        corral_rank.sampler = GlobalStepSampler(order, run.schedule,
                                                rounds=args.gradient_accumulation_steps)
        extra = ({"prefetch_factor": args.dataloader_prefetch_factor,
                  "persistent_workers": args.dataloader_persistent_workers}
                 if args.dataloader_num_workers else {})
        loader = DataLoader(dataset, batch_sampler=corral_rank.sampler, collate_fn=collator,
                            num_workers=args.dataloader_num_workers,
                            pin_memory=args.dataloader_pin_memory, **extra)
        return self.accelerator.prepare(loader)  # type: ignore[attr-defined]

    def training_step(self, model: Any, inputs: dict[str, Any],
                      num_items_in_batch: Any = None) -> torch.Tensor:
        corral_rank = self._corral
        rounds = self.args.gradient_accumulation_steps  # type: ignore[attr-defined]
        if corral_rank.rounds == 0 or corral_rank.rounds >= rounds:  # a step's first round
            corral_rank.step_started(model)
        units_inputs = {k: v for k, v in inputs.items() if k in ("labels", "shift_labels")}
        returned = super().training_step(model, inputs, num_items_in_batch)  # type: ignore[misc]
        corral_rank.round_done(returned, units_inputs, num_items_in_batch)
        return returned

    def train(self, *args: Any, **kwargs: Any) -> Any:
        corral_rank = self._corral
        hf_args = corral_rank.trainer.args
        if args:  # resume_from_checkpoint is train()'s first parameter
            kwargs["resume_from_checkpoint"], args = args[0], args[1:]
        resume = kwargs.get("resume_from_checkpoint")
        if resume is True:  # the Trainer's own meaning: the newest checkpoint in output_dir
            from transformers.trainer_utils import get_last_checkpoint

            resume = get_last_checkpoint(hf_args.output_dir) or resume
        if resume is None or isinstance(resume, str):
            resume = _finished_checkpoint(resume, hf_args.process_index)
            kwargs["resume_from_checkpoint"] = resume
        corral_rank.resumed_from = resume if isinstance(resume, str) else None
        try:
            result = super().train(*args, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            if corral_rank.run is not None:
                status: EndStatus = ("interrupted" if isinstance(exc, KeyboardInterrupt)
                                     else "failed")
                corral_rank.run.end(status, error=f"{type(exc).__name__}: {exc}".splitlines()[0])
            raise
        return result


class _CorralEvents:
    """The Trainer's callback events as corral's (combined with ``TrainerCallback`` in
    ``corral``, so that this module imports transformers only when run by corral)."""

    def __init__(self, corral_rank: _HFRank) -> None:
        self.corral_rank = corral_rank
        self._eval_started = time.perf_counter()
        self._checkpoint: str | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        corral_rank = self.corral_rank
        run, trainer = corral_rank.build(), corral_rank.trainer
        exact, note = exactness(trainer)
        changed = precision_note()
        note = "; ".join(part for part in (note, changed) if part)
        model = getattr(getattr(trainer.model, "config", None), "name_or_path", "") or \
            type(trainer.model).__name__
        sampler = corral_rank.sampler
        run.start(model=str(model), dataset=type(trainer.train_dataset).__name__,
                  step=state.global_step, total_steps=state.max_steps,
                  steps_per_epoch=sampler.order.steps_per_epoch if sampler else 0,
                  exact=exact, exact_note=note, resumed_from=corral_rank.resumed_from,
                  precision="bf16" if args.bf16 else "fp16" if args.fp16 else "fp32")

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # A resumed epoch's loader skips batches through a wrapper that does not pass the
        # Trainer's set_epoch on: the sampler learns its epoch here too.
        if self.corral_rank.sampler is not None:
            self.corral_rank.sampler.set_epoch(int(state.epoch + 1e-9))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        corral_rank = self.corral_rank
        run, clock, trainer = corral_rank.build(), corral_rank.clock, corral_rank.trainer
        assert clock is not None  # the step's first round started it
        exact, _ = exactness(trainer)
        if exact and corral_rank.global_units is not None:
            # Each returned loss is the rank's token sum x processes / the step's token count.
            loss_sum = corral_rank.returned * corral_rank.global_units / run.world
        else:  # the rank's own mean: weigh it by the rank's tokens
            loss_sum = corral_rank.returned * corral_rank.units
        lr = trainer._get_learning_rate() if trainer.lr_scheduler is not None else None
        run.step_done(state.global_step, epoch=max(math.ceil(state.epoch) - 1, 0),
                      loss_sum=loss_sum, units=corral_rank.units, clock=clock,
                      lr=float(lr) if lr is not None else None)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any],
                    **kwargs: Any) -> None:
        trainer = self.corral_rank.trainer
        samples = len(trainer.eval_dataset) if hasattr(trainer.eval_dataset, "__len__") else 0
        runtime = metrics.get("eval_runtime")
        self.corral_rank.build().evaluated(state.global_step, metrics, samples,
                                           float(runtime) if runtime is not None else 0.0)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._checkpoint = f"{args.output_dir}/checkpoint-{state.global_step}"
        mark_saved(self._checkpoint, args.process_index)  # this rank's part is written
        self.corral_rank.build().saved(state.global_step, self._checkpoint)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.corral_rank.build().end("completed", checkpoint=self._checkpoint)


def _finished_checkpoint(asked: str | None, rank: int) -> str | None:
    """``asked``, or the newest checkpoint before it that every rank finished saving
    (``hf_checkpoints``), said on rank 0 when it is not ``asked``."""
    def gather(view: SavedHere | None) -> list[SavedHere | None]:
        if not (dist.is_available() and dist.is_initialized()):
            return [view]
        views: list[SavedHere | None] = [None] * dist.get_world_size()
        dist.all_gather_object(views, view)
        return views

    chosen = complete(asked, rank, gather)
    if chosen != asked and rank == 0:
        print(f"corral: {asked} was not saved by every rank (one was stopped while saving it); "
              f"resuming from {chosen or 'the start'}", file=sys.stderr, flush=True)
    return chosen


def _target_tokens(trainer: Any, inputs: dict[str, Any]) -> torch.Tensor | int:
    """The loss units of one round: target tokens, counted as the Trainer counts them (a
    tensor on the labels' device: read with the step's gather, not here)."""
    if "shift_labels" in inputs:
        labels = inputs["shift_labels"]
    elif "labels" in inputs:
        labels = inputs["labels"]
        if getattr(trainer, "_loss_shifts_labels", True):
            labels = labels[..., 1:]
    else:
        return 0
    return labels.ne(-100).sum()
