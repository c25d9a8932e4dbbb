"""Sharded state across a change of membership: a planned leave or a join re-slices it live.

At the step boundary that decides the change, before the old group goes, every member of the
old group (the leaver too) sends its slice of the optimizer state to rank 0, which holds it
whole (``ShardedOptimizer.gathered``: the checkpoint's gathering). Once the new group formed,
its ranks gather their budgets (a joiner's too), cut the flat vector anew by them, rank 0
broadcasts the whole state (``torch.distributed.broadcast_object_list``) and each rank keeps
its slice of it in a new optimizer over its new slice (``ShardedOptimizer.load_state_dict``,
the resume's re-slicing). The parameters are replicated: a joiner receives them with the
training state it already receives.

An unplanned loss takes a slice with the lost host: the run cannot go on live, and the rank
raises ``SliceLost`` (the run then restarts from its newest checkpoint, re-sliced on load).
What it costs: the whole optimizer state on every rank for the moment of the change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.distributed as dist

from profiles.user_errors import CorralError
from trainer.dist import all_gather_floats
from trainer.settings.train_config import TrainConfig
from trainer.step.optim import OptimizerStep, make_optimizer
from trainer.step.shard_saving import OptimizerState, ShardedOptimizer


class SliceLost(CorralError):
    """A sharded run lost a member without a planned leave: its slice of the state is gone."""


class SliceMoves:
    """One rank's part in moving the sharded state to a new generation (``optim_step`` holds
    it; every method is collective over the group named, in the order of the module)."""

    def __init__(self, config: TrainConfig, optim_step: OptimizerStep,
                 device: torch.device) -> None:
        self.config, self.optim_step, self.device = config, optim_step, device
        self.whole: OptimizerState | None = None
        """The whole optimizer state, on rank 0 from the boundary until the new group has it;
        on every rank after ``reslice`` until the change's training state is loaded."""
        self.gathered = False

    def before_change(self) -> None:
        """At the boundary, over the old group: every slice to rank 0 (kept there)."""
        saved = self.optim_step.saved
        assert isinstance(saved, ShardedOptimizer)
        self.whole, self.gathered = saved.gathered(), True

    def reslice(self, rank: int, world: int, joining: bool) -> None:
        """At each forming (the loop's ``reform``), over the new group: after a change (a
        boundary gathered the slices, or this rank joins) the budgets gathered, this rank's
        new slice, its optimizer state from the whole; else nothing. SliceLost where the group
        changed without a boundary's gathering (a member lost unplanned)."""
        shards = self.optim_step.shards
        assert shards is not None
        changed = (shards.rank, shards.world) != (rank, world)
        if not (self.gathered or joining or changed):
            return
        if not (self.gathered or joining):
            raise SliceLost(
                f'a member of this shard_state = "{self.config.shard_state}" run was lost '
                "without a planned leave, and its slice of the optimizer state with it: the "
                "run restarts from its newest checkpoint (re-sliced for the hosts left)")
        step, saved = self.optim_step, self.optim_step.saved
        assert isinstance(saved, ShardedOptimizer)
        budgets = [row[0] for row in all_gather_floats([shards.own_budget], self.device)]
        shards.reslice(rank, world, budgets)
        step.optimizer = saved.optimizer = make_optimizer(self.config, [shards.master])
        box: list[Any] = [self.whole]
        on_device = self.device if dist.get_backend() == "nccl" else None
        dist.broadcast_object_list(box, src=0, device=on_device)
        self.whole, self.gathered = box[0], False
        assert self.whole is not None
        saved.load_state_dict(self.whole)

    def settled(self) -> None:
        """The change's training state went where it was needed: the whole state let go."""
        self.whole = None

    def training_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """A training state received in the change (a joiner, every other rank but the
        sender), its optimizer the whole one: the sender only has its slice's."""
        return state if self.whole is None else {**state, "optimizer": self.whole}


class NoMoves:
    """A replicated run, or one without live membership: nothing is moved."""

    def reslice(self, rank: int, world: int, joining: bool) -> None:
        """Nothing to cut."""

    def training_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` as received."""
        return state


class ChangingGroup(Protocol):
    """The loop's group driver as seen here (trainer/membership/generations.py)."""

    live: bool
    before_change: Callable[[], None] | None
    after_change: Callable[[], None] | None


def slice_moves(config: TrainConfig, optim_step: OptimizerStep, device: torch.device,
                group: ChangingGroup) -> SliceMoves | NoMoves:
    """A sharded run's ``SliceMoves`` with live membership, hooked on its group's boundary
    (``NoMoves``: replicated, or no live membership)."""
    if not group.live or optim_step.shards is None:
        return NoMoves()
    moves = SliceMoves(config, optim_step, device)
    group.before_change, group.after_change = moves.before_change, moves.settled
    return moves
