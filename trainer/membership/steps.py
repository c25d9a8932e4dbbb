"""The exact loop's side of live membership: a step that can lose a member, the change at a
step boundary, and the forming of the next generation in the same process (``Trainer``'s
methods, kept here; without ``CORRAL_MEMBERSHIP_PORT`` only ``_step``'s first line runs).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
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
    _carried_balancer: dict[str, Any] | None = None
    """Rank 0, while a generation forms: the balancer's state in its numbering (kept when the
    forming fails and is retried)."""

    def train_step(self, step: int) -> StepDone:
        raise NotImplementedError

    def _form_parts(self, balancer_state: dict[str, Any] | None) -> None:
        raise NotImplementedError

    # -- Live membership (trainer/membership/; without CORRAL_MEMBERSHIP_PORT none of it) ---
    def _step(self, step: int) -> StepDone | None:
        """``train_step``; None when a member was lost during it: nothing of the step is
        applied (no optimizer step, gradients zeroed, RNG restored; the data order's position
        is the step number) and the survivors' next generation redoes it (``run.left``: this
        rank's host is not in it)."""
        if self.membership is None:
            return self.train_step(step)
        rng = rng_state()
        try:
            return self.train_step(step)
        except RuntimeError as exc:  # gloo: "connection closed" by a dead peer or an abort
            in_step = self.run.step < step  # the step did not complete here
            if in_step:
                set_rng_state(rng)
            self._lost(exc, in_step)
            return None

    def _guarded(self, work: Callable[[], None]) -> bool:
        """``work()`` (what follows a step: evaluation, rebalance, checkpoint); False when a
        member was lost during one of its collectives: the completed step stands and the
        survivors go on in the next generation (``run.left``: without this rank)."""
        if self.membership is None:
            work()
            return True
        try:
            work()
            return True
        except RuntimeError as exc:
            self._lost(exc, in_step=False)
            return False

    def _lost(self, exc: RuntimeError, in_step: bool) -> None:
        """After a failed collective: the survivors' next generation, formed here; formed
        again without whoever is lost while it forms. Raises ``exc`` when nobody was lost (a
        failure of this rank's own)."""
        assert self.membership is not None
        if not self.membership.is_loss(exc):
            raise exc  # this rank's own failure: it ends, and the others lose it
        seen = time.monotonic()
        # Every peer still in one of the generation's collectives fails now (a peer that did
        # not talk to the lost member would otherwise wait for its own watch).
        self.membership.store.end_generation()
        self.optimizer.zero_grad(set_to_none=True)
        while True:
            plan = self.membership.after_loss(self.run.step, in_step, self.run.split,
                                              self.config.global_batch)
            if not plan.hosts:
                raise exc
            if self.membership.member not in plan.generation.members:
                self.membership.leave()  # its host was cut off and is back: it is out
                self.run.left = True
                return
            try:
                self._regenerate(plan, seen)
                return
            except RuntimeError as again:  # another member lost while the generation formed
                self.membership.unfinished(plan, self.events)
                exc = again

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
        try:
            self._regenerate(plan, seen)
        except RuntimeError as exc:  # a member lost while the generation formed
            self.membership.unfinished(plan, self.events)
            self._lost(exc, in_step=False)
        return not run.left

    def _regenerate(self, plan: NextGeneration, seen: float) -> None:
        """Form ``plan``'s generation in this process: this rank's new place and every
        setting that depends on it first (a forming that fails is retried from there), then
        the new group, every part made on it, the balancer's state carried over (rank 0 keeps
        rank 0's place: the master's host cannot leave), the state sent where needed."""
        assert self.membership is not None
        run, kept = self.run, plan.kept
        carried = self._carried_balancer if self._carried_balancer is not None else (
            None if self.balancer is None else self.balancer.state_dict())
        self._carried_balancer = None if carried is None else balancer_state_for(
            carried, kept, plan.split, RankTimes().to_state())
        # The old group's DDP (and what holds it) goes before the new one is made: its hooks
        # on the parameters go with it. Only what was made since the last forming is scanned
        # (``gc.freeze``): a full collection holds the interpreter, and with it this rank's
        # heartbeat, for seconds on a loaded machine.
        self.ddp = self.runner = self.evaluator = None
        gc.collect()
        gc.freeze()
        self.membership.generation = plan.generation
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
        self.membership.form(self.backend, self.device)
        self._form_parts(self._carried_balancer)
        self._carried_balancer = None
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
