"""The exact loop's side of live membership: a step that can lose a member, the change at a
step boundary, and the forming of the next generation in the same process (``Trainer``'s
methods, kept here; without ``CORRAL_MEMBERSHIP_PORT`` only ``_step``'s first line runs).
"""

from __future__ import annotations

import gc
import time
from typing import Any

import torch

from trainer.balance.balancer import Balancer
from trainer.balance.fit import RankTimes
from trainer.checkpoint.checkpointer import Checkpointer, restore
from trainer.checkpoint.files import rng_state, set_rng_state
from trainer.event_log import EventWriter
from trainer.membership.members import Membership
from trainer.membership.plan import NextGeneration, balancer_state_for, config_for, remap_ranks
from trainer.membership.state import broadcast_state
from trainer.settings.train_config import TrainConfig
from trainer.settings.training_checks import micro_batches
from trainer.step.capacity import Capacity
from trainer.step.optim import OptimizerStep
from trainer.step.prefetch import BatchPrefetcher
from trainer.step.slowdown import SlowdownSchedule
from trainer.step.step_records import RunProgress, StepDone


class MembershipSteps:
    """Mixed into ``Trainer`` (trainer/exact_loop.py), whose attributes these are."""

    membership: Membership | None
    run: RunProgress
    config: TrainConfig
    events: EventWriter
    optimizer: torch.optim.Optimizer
    optim_step: OptimizerStep
    balancer: Balancer | None
    checkpointer: Checkpointer
    model: torch.nn.Module
    micro_batch: tuple[int | None, ...]
    max_batch: tuple[int | None, ...]
    slowdown: SlowdownSchedule
    backend: str
    device: torch.device
    rank: int
    world: int
    ddp: Any
    runner: Any
    evaluator: Any
    prefetcher: BatchPrefetcher | None

    def train_step(self, step: int) -> StepDone:
        raise NotImplementedError

    def _form_parts(self, balancer_state: dict[str, Any] | None) -> None:
        raise NotImplementedError

    # -- Live membership (trainer/membership/; without CORRAL_MEMBERSHIP_PORT none of it) ---
    def _step(self, step: int) -> StepDone | None:
        """``train_step``; None when a member was lost during it: nothing of the step is
        applied (no optimizer step, gradients zeroed, RNG restored; the data order's position
        is the step number) and the survivors' next generation redoes it."""
        if self.membership is None:
            return self.train_step(step)
        rng = rng_state()
        try:
            return self.train_step(step)
        except RuntimeError as exc:  # gloo: "connection closed" by a dead or leaving peer
            seen = time.monotonic()
            if self.run.step < step:  # the step did not complete here
                set_rng_state(rng)
            self.optimizer.zero_grad(set_to_none=True)
            plan = self.membership.after_loss(self.run.step, exc, self.run.split,
                                              self.config.global_batch)
            if not plan.hosts:  # nobody was lost: a failure of its own, not a loss
                raise
            self._regenerate(plan, seen)
            return None

    def _boundary(self, done: StepDone) -> bool:
        """The change the step's tallies ask for, if any; False when this rank leaves."""
        assert self.membership is not None
        run, seen = self.run, time.monotonic()
        plan = self.membership.at_boundary(done.tallies, run.step, run.split,
                                           self.config.global_batch, self.events)
        if plan is None:
            return True
        if self.membership.member not in plan.generation.members:
            self.membership.leave()
            run.left = True
            return False
        self._regenerate(plan, seen)
        return True

    def _regenerate(self, plan: NextGeneration, seen: float) -> None:
        """Form ``plan``'s generation in this process: the new group, this rank's new place,
        every part that depends on them, the balancer's state carried over (rank 0 keeps
        rank 0's place: the master's host cannot leave), the state sent where needed."""
        assert self.membership is not None
        run, kept = self.run, plan.kept
        balancer_state = None if self.balancer is None else balancer_state_for(
            self.balancer.state_dict(), kept, plan.split, RankTimes().to_state())
        # The old group's DDP (and what holds it) goes before the new one is made: its hooks
        # on the parameters go with it.
        self.ddp = self.runner = self.evaluator = None
        gc.collect()
        self.membership.form(plan, self.backend, self.device)
        self.rank, self.world = self.membership.rank, len(plan.generation.members)
        if self.prefetcher is not None:
            self.prefetcher.rank = self.rank
        self.events.members = plan.generation.members
        self.config = config_for(self.config, kept, plan.split)
        self.micro_batch = remap_ranks(self.micro_batch, kept, None)
        self.max_batch = remap_ranks(self.max_batch, kept, None)
        self.slowdown = SlowdownSchedule(self.config.slowdown_for(self.rank), (), self.rank)
        self.optim_step.world = self.world
        run.split, run.last_timed = plan.split, None
        self._form_parts(balancer_state)
        self._take_state(plan, seen)

    def _take_state(self, plan: NextGeneration, seen: float) -> None:
        """In the new generation: the training state from ``plan.state_from`` to every other
        rank (a joiner; a survivor a step behind), loaded as a resume loads a checkpoint."""
        assert self.membership is not None
        run, sent = self.run, 0
        if plan.state_from is not None:
            sent, state = broadcast_state(lambda: self.checkpointer.state(run), plan.state_from,
                                          self.rank, self.device)
            if state is not None:
                kept_checkpoint = run.checkpoint, run.checkpoint_step
                restore(("", state), model=self.model, optimizer=self.optimizer,
                        load_training=self.optim_step.load_state_dict, run=run,
                        world=self.world, policy=self.config.policy)
                run.checkpoint, run.checkpoint_step = kept_checkpoint
        self.membership.changed(plan, seen, sent)



def joiner_capacity(config: TrainConfig, world: int, split: tuple[int, ...]) -> Capacity:
    """A joiner's first split: its generation's (every rank's micro-batch as its own flags
    say; only rank 0's balancer reads the others', and rank 0 keeps its own)."""
    return Capacity(split=split, source="split", samples_per_s=(None,) * world,
                    max_batch=(None,) * world, micro_batch=micro_batches(config, world),
                    detail="the split of the generation that admitted this joiner")
