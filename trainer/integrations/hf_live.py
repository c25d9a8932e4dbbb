"""Live membership for the Hugging Face ``Trainer`` / TRL opt-in (``hf.py``): a host leaves or
joins at a step boundary and the others train on in their own processes, with no line more in
the script, through the same generations driver as corral's loop and the DDP helper
(trainer/membership/generations.py). ``HFLive`` implements the opt-in's part of it.

The boundary is the Trainer's ``on_step_end`` (the optimizer stepped, the step's tally was
gathered). What changes there, and how:

- The data. The opt-in's live loader is a plain ``DataLoader`` over ``RankRoundSampler`` (this
  rank's share of each step, cut into the accumulation rounds), not accelerate's prepared one:
  accelerate's ``DataLoaderShard`` fetches one batch ahead, so the next step's indices would be
  cut for the old group before the boundary decides. Without prefetch the next step's indices
  are cut when the Trainer asks for them, after the boundary, with the new group's split and
  rank: no sample skipped or seen twice. Worker processes fetch ahead too: a loader with
  ``dataloader_num_workers`` keeps the restart path (``live_refusal``).
- The Trainer's DDP module: ``DistributedDataParallel._update_process_group`` (torch's own, for
  shrinking and growing a group under an unchanged module) points its reducer (the
  ``find_unused_parameters`` map's all-reduce, the bucket rebuild) and its buffers' broadcast at
  the new group; the gradients go through corral's comm hook, which reduces over the current
  group (after a join in the model's parameter order: ``CanonicalReduce``, as the DDP helper).
- accelerate's and the Trainer's view of the world: ``num_processes`` and ``process_index`` in
  accelerate's shared state (``TrainingArguments.world_size`` and ``process_index`` read it),
  so the Trainer's token count is gathered over the new group and its loss scale
  (``accelerator.num_processes``) matches the new group's mean.
- A joiner: its Trainer builds its model, optimizer and scheduler alone (its own launch's group
  of one), is let in at ``on_train_begin``, takes the run's model, optimizer, scheduler and
  ``TrainerState`` counters from a member, and its epoch loop starts at the step after the one
  it was let in at (``hf.py``'s ``_run_epoch``: the Trainer's own resume position and batch
  skip). Its clock's one collective (whether any rank emulates a slowdown) runs on its own
  group before it is let in, as the others' ran at their start.

A member lost unplanned is not survived: the Trainer's collectives fail inside its own loop
(``transformers/trainer.py``, ``_run_epoch``: ``training_step`` and the optimizer step are
called there, no hook can redo a step), so the run restarts from its checkpoint, as a plain
script does.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from trainer.integrations.ddp_live import (
    CanonicalReduce,
    script_generations,
    still_in,
)
from trainer.integrations.run import ScriptRun
from trainer.integrations.shares import GlobalStepSampler
from trainer.membership.members import Membership
from trainer.membership.plan import NextGeneration


class RankRoundSampler(GlobalStepSampler):
    """This rank's share of each step in ``rounds`` consecutive pieces, the step's split read
    when its first piece is asked for (a plain ``DataLoader``'s batch sampler)."""

    def __len__(self) -> int:
        return self.order.steps_per_epoch * self.rounds

    def __iter__(self) -> Iterator[list[int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        first = epoch * self.order.steps_per_epoch + 1
        for step in range(first, first + self.order.steps_per_epoch):
            split = self.schedule.split_at(step)
            yield from self._pieces(
                self.order.local_indices(step, split, self.schedule.rank).tolist())


def live_refusal(trainer: Any) -> str | None:
    """Why ``trainer`` cannot go through a live change (None: it can)."""
    args = trainer.args
    if args.dataloader_num_workers:
        return "dataloader_num_workers > 0: its workers cut the next steps' batches ahead"
    if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled",
                                                             False):
        return "FSDP or DeepSpeed shards the state over the launch's group"
    if getattr(args, "ddp_static_graph", None) or getattr(args, "torch_compile", False):
        return "ddp_static_graph or torch_compile keeps the launch's group"
    return None


def at_least(split: tuple[int, ...], smallest: int) -> tuple[int, ...]:
    """``split`` with every share at least ``smallest`` (each accumulation round needs a
    sample), taken from the largest; the same on every rank (a function of ``split``)."""
    shares = list(split)
    for i in range(len(shares)):
        while shares[i] < smallest:
            largest = max(range(len(shares)), key=lambda r: shares[r])
            if shares[largest] <= smallest:
                raise ValueError(f"{split} cannot give {len(split)} shares of {smallest}")
            shares[largest] -= 1
            shares[i] += 1
    return tuple(shares)


def accelerate_world(world: int, rank: int | None) -> None:
    """accelerate's (and so the Trainer's) number of processes and this one's index
    (``rank`` None: kept, as a leaving rank keeps its index: it is nobody's process 0)."""
    from accelerate.state import AcceleratorState, PartialState

    for shared in (PartialState._shared_state, AcceleratorState._shared_state):
        if shared:
            shared["num_processes"] = world
            if rank is not None:
                shared["process_index"] = rank


STATE_FIELDS = ("global_step", "epoch", "total_flos", "num_input_tokens_seen", "log_history",
                "best_metric", "best_global_step", "best_model_checkpoint")
"""The ``TrainerState`` fields a joiner takes from the run (the rest is its own, or fixed)."""


class HFLive:
    """The opt-in's side of the generations driver for one rank (``GenerationLoop``)."""

    def __init__(self, membership: Membership, run: ScriptRun, sampler: RankRoundSampler,
                 trainer: Any, *, total_steps: int, backend: str) -> None:
        self.run, self.sampler, self.trainer = run, sampler, trainer
        self.rounds = sampler.rounds
        self.progress, self.group = script_generations(membership, self, run,
                                                       total_steps=total_steps, backend=backend)
        self.mixed = membership.joining is not None
        """Whether a joiner is (or was) in the group: DDP's bucket layouts differ."""

    @property
    def split(self) -> tuple[int, ...]:
        return self.run.schedule.split_at_quietly(self.progress.step + 1)

    def reduce_for(self, model: torch.nn.Module) -> CanonicalReduce:
        """The comm hook's reduction for the DDP module ``model``."""
        return CanonicalReduce(lambda: [p for p in model.parameters() if p.requires_grad],
                               lambda: self.mixed)

    def after_step(self, step: int, rows: list[list[float]]) -> bool:
        """Step ``step`` completed and its tally was gathered (``rows``, flags last): the
        change it asks for, if any. False when this rank's host left."""
        if still_in(self, step, rows):
            return True
        self._alone()
        return False

    # -- what the generations driver calls ---------------------------------------------------
    def take_place(self, plan: NextGeneration, rank: int) -> None:
        """This rank's place in ``plan``'s generation: the shares re-split from the next step
        on (every share at least one sample a round)."""
        split = at_least(tuple(plan.split), self.rounds)
        schedule = self.run.schedule.for_generation(len(plan.generation.members), rank, split,
                                                    plan.step + 1)
        self.run.moved(schedule)
        self.sampler.schedule = schedule
        self.mixed = self.mixed or plan.change == "joined"

    def reform(self) -> None:
        """The Trainer's DDP module and accelerate's world on the new default group."""
        self._regroup(dist.distributed_c10d._get_default_group(), self.run.rank)

    def training_state(self) -> dict[str, Any]:
        """The model's, optimizer's and scheduler's state and the Trainer's counters."""
        trainer = self.trainer
        scheduler = trainer.lr_scheduler
        return {"model": _inner(trainer).state_dict(),
                "optimizer": trainer.optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "trainer": {k: getattr(trainer.state, k) for k in STATE_FIELDS
                            if hasattr(trainer.state, k)}}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """``training_state``'s, taken from another rank (a joiner, before its first step)."""
        trainer = self.trainer
        with torch.no_grad():
            _inner(trainer).load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        if state["scheduler"] is not None and trainer.lr_scheduler is not None:
            trainer.lr_scheduler.load_state_dict(state["scheduler"])
        for key, value in state["trainer"].items():
            setattr(trainer.state, key, value)
        step = trainer.state.global_step
        trainer._globalstep_last_logged = trainer._initial_global_step = step
        trainer._initial_num_input_tokens_seen = trainer.state.num_input_tokens_seen

    # -- this rank's own -----------------------------------------------------------------------
    def _regroup(self, group: Any, rank: int | None) -> None:
        model = self.trainer.model_wrapped
        if isinstance(model, DistributedDataParallel):
            model._update_process_group(group)
        accelerate_world(dist.get_world_size(), rank)

    def _alone(self) -> None:
        """This rank's host left: the Trainer stops after this step, and what it and the
        script do after (logging, saving) runs in a group of its own."""
        self.sampler.schedule = self.run.schedule
        dist.destroy_process_group()
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        self._regroup(dist.distributed_c10d._get_default_group(), None)
        print(f"corral: this host left the run at step {self.progress.step}; the others train "
              "on", file=sys.stderr, flush=True)


def _inner(trainer: Any) -> torch.nn.Module:
    model = trainer.model_wrapped
    return model.module if isinstance(model, DistributedDataParallel) else trainer.model
