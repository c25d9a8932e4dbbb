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

With live membership (``CORRAL_MEMBERSHIP_PORT``: the script imports this module) a host leaves
or joins at the Trainer's step end and the others train on in their processes: ``hf_live.py``
(what changes and how), ``hf_entry.py`` (a rank's way in).

Exactness: with token-averaged loss (``average_tokens_across_devices``, the default) the Trainer
divides each rank's summed loss by the step's token count over all ranks and multiplies by the
number of processes, which DDP's averaging undoes: the gradient is the mean over the global
batch's tokens whatever the shares. ``exactness`` says when that does not hold.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from trainer.dist import on_any_rank
from trainer.events import EndStatus
from trainer.integrations.contract import ScriptSettings
from trainer.integrations.hf_checkpoints import finished_checkpoint, mark_saved
from trainer.integrations.hf_entry import HFEntry
from trainer.integrations.hf_live import HFLive, RankRoundSampler
from trainer.integrations.hf_loss import exactness, target_tokens
from trainer.integrations.rank_setup import precision_note
from trainer.integrations.run import ScriptRun
from trainer.integrations.shares import GlobalStepSampler
from trainer.step.batch_order import GlobalBatchOrder
from trainer.step.clock import StepClock, make_clock
from trainer.step.slowdown import emulates

JOINED = "corral-joined"
"""A joiner's resume point for the Trainer's batch skip (no checkpoint: the state came live;
the Trainer finds no RNG file there and keeps its own)."""
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


class _HFRank:
    """What the opt-in keeps for one rank: its ``ScriptRun`` and the step being accumulated."""

    def __init__(self, settings: ScriptSettings, trainer: Any) -> None:
        self.settings, self.trainer = settings, trainer
        self.run: ScriptRun | None = None
        self.sampler: GlobalStepSampler | None = None
        self.entry = HFEntry(settings, identity={
            "samples": len(trainer.train_dataset) if hasattr(trainer.train_dataset, "__len__")
            else None, "rounds": trainer.args.gradient_accumulation_steps,
            "seed": trainer.args.seed})
        self.live: HFLive | None = None
        """With live membership: this rank's side of the run's generations (``hf_live``)."""
        self.live_sampler: RankRoundSampler | None = None
        """The live loader's sampler, until the rank's ``HFLive`` is made."""
        self.joined_at: int | None = None
        """A joiner's: the step it was let in at (its epoch loop starts after it)."""
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
                self.settings, device=_device(args.device), min_share=rounds,
                global_batch=args.per_device_train_batch_size * args.world_size * rounds,
                lead=2 + math.ceil(ahead / rounds),
                batch_source=f"per_device_train_batch_size {args.per_device_train_batch_size} x "
                             f"{args.world_size} ranks x gradient_accumulation_steps {rounds}")
        return self.run

    def wants_live(self) -> bool:
        """Whether this rank takes part in live membership (``HFEntry.wants_live``)."""
        return self.entry.wants_live(self.trainer, say=self.run is None)

    def live_loader(self, dataset: Any, collator: Any) -> DataLoader:
        """The live loader (``HFEntry.loader``): a launched rank's on its run's schedule."""
        schedule = None if self.entry.joining else self.build().schedule
        loader, self.live_sampler = self.entry.loader(dataset, collator, self.trainer.args,
                                                      schedule)
        self.sampler = self.live_sampler
        return loader

    def go_live(self, total_steps: int) -> None:
        """At ``on_train_begin``: a launched rank's generation 0; a joiner let in, with the
        run's state and its place."""
        sampler, trainer = self.live_sampler, self.trainer
        assert sampler is not None
        if not self.entry.joining:
            self.live = self.entry.launched(self.build(), sampler, trainer, total_steps)
            return
        clock = self.new_clock()  # its collective on its own group, as the others' was
        self.live = self.entry.admitted(sampler.schedule.global_batch,
                                        _device(trainer.args.device), sampler, trainer,
                                        total_steps)
        self.run, self.joined_at, self.clock = self.live.run, self.live.progress.step, clock
        if isinstance(trainer.model_wrapped, DistributedDataParallel):
            clock.reduce = self.live.reduce_for(trainer.model_wrapped)
            trainer.model_wrapped.register_comm_hook(None, clock.hook)

    def new_clock(self) -> StepClock:
        """This rank's compute clock (collective: whether any rank emulates a slowdown)."""
        device = self.trainer.args.device
        return make_clock(device, emulated_run=on_any_rank(emulates(self.settings.slowdown),
                                                           device))

    def step_started(self, model: Any) -> None:
        """The first round of a step: start this rank's compute clock."""
        if self.clock is None:
            self.clock = self.new_clock()
            if isinstance(model, DistributedDataParallel):
                if self.live is not None:  # no bucket reduced alone: layouts differ after a join
                    self.clock.reduce = self.live.reduce_for(model)
                model.register_comm_hook(None, self.clock.hook)
        run = self.build()
        self.clock.start(self.settings.slowdown_of(run.rank))
        self.returned = self.units = 0.0
        self.rounds = 0

    def round_done(self, returned: torch.Tensor, inputs: dict[str, Any],
                   num_items_in_batch: Any) -> None:
        """One round of the step: its loss and tokens added on the device (no host read)."""
        self.returned = self.returned + returned.detach().to(torch.float64)
        self.units = self.units + target_tokens(self.trainer, inputs)
        self.global_units = num_items_in_batch
        self.rounds += 1


class _CorralShares:
    """Mixed in before the user's trainer class (``corral``)."""

    _corral: _HFRank

    def get_train_dataloader(self) -> DataLoader:
        corral_rank = self._corral
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
        if corral_rank.wants_live():
            return corral_rank.live_loader(dataset, collator)
        run = corral_rank.build()
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

    def _run_epoch(self, **kwargs: Any) -> Any:
        """A joiner's epochs start at the step after the one it was let in at: the epochs
        before are the others', and its own is resumed as from a checkpoint there (the
        Trainer's own batch skip)."""
        joined = self._corral.joined_at
        if joined is not None:
            per_epoch = kwargs["num_update_steps_per_epoch"]
            first = joined // per_epoch
            if kwargs["epoch"] < first:
                return None
            trained = (joined % per_epoch) * self.args.gradient_accumulation_steps  # type: ignore[attr-defined]
            if kwargs["epoch"] == first and trained:
                kwargs.update(epochs_trained=first, steps_trained_in_current_epoch=trained,
                              resume_from_checkpoint=JOINED)
        return super()._run_epoch(**kwargs)  # type: ignore[misc]

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
            resume = finished_checkpoint(resume, hf_args.process_index)
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
        if corral_rank.live_sampler is not None:
            corral_rank.go_live(state.max_steps)
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
        rows = run.step_done(state.global_step, epoch=max(math.ceil(state.epoch) - 1, 0),
                             loss_sum=loss_sum, units=corral_rank.units, clock=clock,
                             lr=float(lr) if lr is not None else None)
        live = corral_rank.live
        if live is not None and not live.after_step(state.global_step, rows):
            control.should_training_stop = True  # this host left: the others train on

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
        live = self.corral_rank.live
        left = live is not None and live.progress.left
        self.corral_rank.build().end("left" if left else "completed", checkpoint=self._checkpoint)


def _device(device: torch.device) -> torch.device:
    """The Trainer's device as corral names it (its CPU is ``cpu:0``, a name ``torch.load``'s
    ``map_location`` and the resource sampler do not take)."""
    return torch.device("cpu") if device.type == "cpu" else device
