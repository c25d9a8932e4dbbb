"""When and what to checkpoint, how to resume, and the run's final result.

The loop only says ``checkpointer.save(run)`` after every step (and ``last_step=True`` at the
end); the checkpointer decides whether a checkpoint is due. Files are written by
trainer/checkpoint/files.py (atomically, rank 0 only). On resume rank 0 reads the newest complete
checkpoint and broadcasts it, since hosts share no filesystem.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from profiles.user_errors import UsageError
from trainer.balance.balancer import Balancer
from trainer.checkpoint.files import (
    CheckpointError,
    load_newest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from trainer.dist import print0
from trainer.event_log import EventWriter
from trainer.events import CheckpointEvent
from trainer.run_layout import RunLayout
from trainer.settings.train_config import TrainConfig, split_task_spec
from trainer.step.shard_saving import ShardedOptimizer
from trainer.step.step_records import RunProgress
from trainer.tasks import Task
from trainer.tasks.loader import task_options


def run_identity(config: TrainConfig) -> dict[str, Any]:
    """What must match for a checkpoint to continue this run."""
    common = {"global_batch": config.global_batch, "seed": config.seed,
              "optimizer": config.optimizer}
    if config.task == "image":
        return {"model": config.model, "norm": config.resolved_norm, "dataset": config.dataset,
                "samples": config.samples, **common}
    task = config.task
    if task not in ("causal_lm",):  # a user file: its pushed path changes with its content
        path, function = split_task_spec(task)
        task = f"{path.name}:{function}"
    return {"task": task, "task_options": task_options(config.task_options), **common}


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state to checkpoint: everything, or, when some parameters are frozen (LoRA),
    only the trained parameters and the buffers (the frozen ones, and a quantised base's
    quantisation state, come from the task)."""
    params = dict(model.named_parameters())
    if all(p.requires_grad for p in params.values()):
        return model.state_dict()
    kept = {n for n, p in params.items() if p.requires_grad} | dict(model.named_buffers()).keys()
    return {k: v for k, v in model.state_dict().items() if k in kept}


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``model_state``'s output; every trained parameter must be in it."""
    result = model.load_state_dict(state, strict=False)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(result.missing_keys) & trained)
    if result.unexpected_keys or missing:
        raise UsageError(f"the checkpoint does not fit the model (missing {missing[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]})")


class Checkpointer:
    """Rank 0 saves every ``--checkpoint-every`` steps and after the last step."""

    def __init__(self, config: TrainConfig, *, rank: int, world: int, events: EventWriter,
                 model: nn.Module, optimizer: torch.optim.Optimizer | ShardedOptimizer,
                 balancer: Balancer | None,
                 training: Callable[[], dict[str, Any]] | None = None) -> None:
        self.config, self.rank, self.world, self.events = config, rank, world, events
        self.model, self.optimizer, self.balancer = model, optimizer, balancer
        self.training = training
        self.saved_step: int | None = None
        """Sharded state: the step of the last checkpoint every rank took part in."""

    def due(self, run: RunProgress, *, last_step: bool = False) -> bool:
        """Whether ``save`` writes a checkpoint of ``run.step`` (the same answer on every rank
        but for rank 0's own writes)."""
        every = self.config.checkpoint_every
        if run.step == 0 or run.checkpoint_step == run.step:
            return False
        return last_step or bool(every and run.step % every == 0)

    def save(self, run: RunProgress, *, last_step: bool = False) -> None:
        """Write a checkpoint of ``run.step`` if one is due (rank 0 only). Under sharded state
        every rank takes part (collective): the optimizer state is gathered whole to rank 0."""
        if isinstance(self.optimizer, ShardedOptimizer):
            if self.saved_step == run.step or not self.due(run, last_step=last_step):
                return  # ``saved_step``: the same answer on every rank
            self.saved_step = run.step
            whole = self.optimizer.gathered()
            if self.rank == 0:
                self._write(run, whole)
            return
        if self.rank == 0 and self.due(run, last_step=last_step):
            self._write(run)

    def state(self, run: RunProgress, optimizer: dict[str, Any] | None = None
              ) -> dict[str, Any]:
        """Everything an exact restart needs after ``run.step`` (a checkpoint's content; a
        joiner receives the same, trainer/membership/state.py); ``optimizer``: the
        optimizer's state when gathered (sharded), else this rank's."""
        config = self.config
        return {
            "step": run.step, "samples_seen": run.step * config.global_batch,
            "model": model_state(self.model),
            "optimizer": optimizer if optimizer is not None else self.optimizer.state_dict(),
            "split": list(run.split), "policy": config.policy, "world_size": self.world,
            "balancer": self.balancer.state_dict() if self.balancer is not None else None,
            "rng": rng_state(), "run": run_identity(config),
            "training": self.training() if self.training is not None else None,
        }

    def _write(self, run: RunProgress, optimizer: dict[str, Any] | None = None) -> None:
        config = self.config
        path = save_checkpoint(config.run_dir, self.state(run, optimizer),
                               keep=config.keep_checkpoints)
        run.checkpoint, run.checkpoint_step = str(path), run.step
        self.events.emit(CheckpointEvent(t=time.time(), rank=0, step=run.step, path=str(path)))


def resume(config: TrainConfig, *, rank: int,
           device: torch.device) -> tuple[str, dict[str, Any]] | None:
    """Rank 0 reads the newest complete checkpoint and broadcasts it (no shared filesystem).

    Collective whenever ``--resume`` is given: every rank gets the same answer or error.
    """
    if not config.resume:
        return None
    payload: dict[str, Any] = {"state": None, "path": None, "error": None}
    if rank == 0:
        _read_newest(config, payload)
    payload_list = [payload]
    dist.broadcast_object_list(payload_list, src=0, device=device)
    payload = payload_list[0]
    if payload["error"]:
        # Files none of which can be used are not bad input: that run's progress is at stake.
        error_type = CheckpointError if payload.get("unusable") else UsageError
        raise error_type(payload["error"])
    if payload["state"] is None:
        return None
    return payload["path"], payload["state"]


def restore(resumed: tuple[str, dict[str, Any]] | None, *, model: nn.Module,
            optimizer: torch.optim.Optimizer | ShardedOptimizer,
            load_training: Callable[[dict[str, Any] | None], None], run: RunProgress, world: int,
            policy: str) -> tuple[tuple[int, ...] | None, dict[str, Any] | None, str | None]:
    """Load a resumed checkpoint (``resume``'s answer) into the model, the optimizer, the
    training state (``load_training``), the RNG and ``run``; returns ``(split, balancer state,
    path)`` to continue with (the split and balancer only for the same world and policy)."""
    if resumed is None:
        return None, None, None
    path, state = resumed
    load_model_state(model, state["model"])
    optimizer.load_state_dict(state["optimizer"])
    load_training(state.get("training"))
    set_rng_state(state["rng"])
    run.step = run.checkpoint_step = int(state["step"])
    run.checkpoint = path
    if state["world_size"] == world and state["policy"] == policy:
        return tuple(state["split"]), state["balancer"], path
    return None, None, path


def _read_newest(config: TrainConfig, payload: dict[str, Any]) -> None:
    try:
        found = load_newest_checkpoint(config.run_dir)
    except CheckpointError as exc:
        payload.update(error=str(exc), unusable=True)
        return
    except OSError as exc:
        payload["error"] = f"cannot read checkpoints in {config.run_dir}: {exc}"
        return
    if found is None:
        print0(f"corral trainer: no checkpoint in {config.run_dir}; starting fresh")
        return
    path, state, skipped = found
    ours, saved = run_identity(config), state.get("run", {})
    mismatch = ", ".join(f"{k} {saved.get(k)!r} != {v!r}" for k, v in ours.items()
                         if saved.get(k) != v)
    if mismatch:
        payload["error"] = f"{path} belongs to a different run ({mismatch})"
        return
    payload.update(state=state, path=str(path))
    for note in skipped:
        print0(f"corral trainer: skipped checkpoint {note}")
    if skipped:
        print0(f"corral trainer: resuming from the previous good checkpoint {path}")


def write_final(task: Task, model: nn.Module, run_dir: str) -> Path:
    """Write the trained result to ``RUN_DIR/final`` (complete or not at all): the task's
    ``save_final``, else ``model.pt`` with the state dict."""
    final = Path(RunLayout(run_dir).path(RunLayout.FINAL))
    tmp = final.with_name(f".final.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if task.save_final is not None:
            task.save_final(model, tmp)
        else:
            torch.save(model.state_dict(), tmp / "model.pt")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
