"""Checkpoints of a local-exchange run, written at a round's end.

At a round's end every rank holds the anchor (the model; with ``outer_overlap``, its island's
eager start), so the checkpoint is the exact mode's (model, rank 0's inner optimizer, training
state, RNG, step) plus ``local_rounds``: every island's inner optimizer state (gathered from the
island leaders: islands' inner states differ) and error-feedback residuals
(``outer_compression``), the outer optimizer's momentum,
the islands' speeds, the round length and, with ``outer_overlap``, the pending exchange's
average (waited for at the checkpoint: the next round applies it, as the run would have), the
anchor, and every island's eager start and own share of the pending average. A resume
continues from the round position exactly: a run that stopped or lost a rank mid-round resumes
from the last round's end and trains that round again, the same as the uninterrupted run. A run
that goes on without a lost host resumes with fewer islands (``RoundSaver.load``).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from trainer.checkpoint.checkpointer import model_state, run_identity
from trainer.checkpoint.files import rng_state, save_checkpoint
from trainer.dist import print0
from trainer.event_log import EventWriter
from trainer.events import CheckpointEvent
from trainer.lowcomm.outer import IslandGroups, IslandOuterState, OuterStep
from trainer.settings.train_config import TrainConfig
from trainer.step.optim import OptimizerStep
from trainer.step.step_records import RunProgress


class RoundSaver:
    """Decides (identically on every rank) and writes (rank 0) round-end checkpoints."""

    def __init__(self, config: TrainConfig, *, rank: int, events: EventWriter, model: nn.Module,
                 optimizer: torch.optim.Optimizer, optim_step: OptimizerStep, outer: OuterStep,
                 groups: IslandGroups) -> None:
        self.config, self.rank, self.events = config, rank, events
        self.model, self.optimizer, self.optim_step = model, optimizer, optim_step
        self.outer, self.groups = outer, groups
        self.saved_step: int | None = None

    def due(self, run: RunProgress, before: int, last: bool) -> bool:
        """Whether the round from ``before`` to ``run.step`` ends with a checkpoint: it crossed
        a multiple of ``checkpoint_every``, or the run ends."""
        if run.step == 0 or self.saved_step == run.step or run.step == run.checkpoint_step:
            return False
        every = self.config.checkpoint_every
        return last or run.stopping or bool(every and run.step // every > before // every)

    def save(self, run: RunProgress, before: int, speeds: list[float], round_steps: int | None,
             *, last: bool = False) -> None:
        """Collective when due: the island leaders' inner states go to rank 0, which writes."""
        if not self.due(run, before, last):
            return
        self.saved_step = run.step
        self.outer.settle()  # the pending exchange's average goes into the checkpoint
        island = self.outer.island_state()
        mine = ((self.groups.index, _on_cpu(self.optimizer.state_dict()), island.residual,
                 {"own": island.own, "start": island.start})
                if self.groups.is_leader else None)
        gathered: list[Any] = [None] * dist.get_world_size() if self.rank == 0 else []
        dist.gather_object(mine, gathered if self.rank == 0 else None, dst=0)
        if self.rank != 0:
            return
        inner = {item[0]: item[1] for item in gathered if item is not None}
        feedback = {item[0]: item[2] for item in gathered if item is not None}
        eager = {item[0]: item[3] for item in gathered if item is not None}
        config = self.config
        state = {
            "step": run.step, "samples_seen": run.step * config.global_batch,
            "model": model_state(self.model), "optimizer": self.optimizer.state_dict(),
            "split": [], "policy": config.policy, "world_size": dist.get_world_size(),
            "balancer": None, "rng": rng_state(), "run": run_identity(config),
            "training": self.optim_step.state_dict(),
            "local_rounds": {
                "islands": [list(r) for r in self.groups.islands],
                "inner": [inner[i] for i in range(len(self.groups.islands))],
                "outer": self.outer.state_dict(), "speeds": list(speeds),
                "feedback": [feedback[i] for i in range(len(self.groups.islands))],
                "eager": [eager[i] for i in range(len(self.groups.islands))],
                "round_steps": round_steps},
        }
        path = save_checkpoint(config.run_dir, state, keep=config.keep_checkpoints)
        run.checkpoint, run.checkpoint_step = str(path), run.step
        self.events.emit(CheckpointEvent(t=time.time(), rank=0, step=run.step, path=str(path)))

    def load(self, state: dict[str, Any], device: torch.device, speeds: list[float],
             round_steps: int | None) -> tuple[list[float], int | None]:
        """After ``restore`` loaded the model and rank 0's inner state: this island's inner
        state and the outer state; returns the speeds and round length to continue with. A
        checkpoint of an exact run starts the outer state afresh from its model."""
        saved = state.get("local_rounds")
        islands = [list(r) for r in self.groups.islands]
        if saved is None:
            self.outer.load_state_dict({"optimizer": self.outer.optimizer.state_dict()}, device)
            return speeds, round_steps
        if saved["islands"] != islands:
            # A host lost (on_host_loss = "continue") or the islands regrouped: the model (the
            # anchor) and the outer momentum carry over; every island starts from the inner
            # state of the island that held rank 0 (the master's, which is never the lost one),
            # and the speeds are measured again.
            # The error-feedback residuals are dropped (each was its own island's): at most
            # one round's quantisation error of the lost layout.
            self.optimizer.load_state_dict(saved["inner"][0])
            self.outer.load_state_dict(saved["outer"], device)
            print0(f"corral trainer: the islands changed since the checkpoint "
                   f"({_islands_text(saved['islands'])} -> {_islands_text(islands)}): every "
                   f"island continues with island 0's inner optimizer state")
            return speeds, saved["round_steps"] if round_steps is None else round_steps
        self.optimizer.load_state_dict(saved["inner"][self.groups.index])
        residuals = saved.get("feedback") or [None] * len(islands)
        eager = (saved.get("eager") or [{}] * len(islands))[self.groups.index]
        self.outer.load_state_dict(saved["outer"], device, IslandOuterState(
            residual=residuals[self.groups.index], own=eager.get("own"),
            start=eager.get("start")))
        return list(saved["speeds"]), (round_steps if round_steps is not None
                                       else saved["round_steps"])


def _islands_text(islands: list[list[int]]) -> str:
    """``[[0], [1, 2]]`` -> ``0 | 1,2``."""
    return " | ".join(",".join(map(str, ranks)) for ranks in islands)


def _on_cpu(value: Any) -> Any:
    """``value`` with every tensor in it copied to the CPU (rank 0 can unpickle it)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_on_cpu(v) for v in value)
    return value
