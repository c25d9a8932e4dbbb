"""The optimizer side of a step: the learning-rate schedule, gradient clipping, the fp16
gradient scaler and the optimizer itself.

Everything here runs after the gradient all-reduce, on gradients that are identical on every
rank, so every rank takes the same decisions without talking: the same global norm to clip to,
the same overflow found by the scaler (an inf or NaN on one rank is in the sum on every rank),
the same skipped step and the same new scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainer.settings.train_config import TrainConfig
from trainer.step.tally import divide_by_global_units


def make_optimizer(config: TrainConfig, parameters: list[nn.Parameter]
                   ) -> torch.optim.Optimizer:
    """The optimizer the settings name, over ``parameters``, with their hyperparameters."""
    if config.optimizer == "adamw":
        beta1, beta2 = config.betas
        return torch.optim.AdamW(parameters, lr=config.lr, betas=(beta1, beta2), eps=config.eps,
                                 weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                           nesterov=config.nesterov, weight_decay=config.weight_decay)


@dataclass(frozen=True, kw_only=True)
class LRSchedule:
    """The learning rate of every step: a linear warm-up, then constant, cosine or linear."""

    kind: str
    """``constant``, ``cosine`` or ``linear`` (after the warm-up)."""
    lr: float
    """The peak learning rate (reached at the end of the warm-up)."""
    min_lr: float
    """The learning rate of the last step (cosine and linear)."""
    warmup_steps: int
    """Steps 1..warmup_steps rise linearly to ``lr`` (step k uses ``lr·k/warmup_steps``)."""
    total_steps: int
    """The run's last step."""

    def lr_at(self, step: int) -> float:
        """The learning rate of 1-based step ``step`` (a pure function of the step, so a
        resumed run continues the schedule exactly)."""
        if step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps
        if self.kind == "constant" or self.total_steps <= self.warmup_steps:
            return self.lr
        progress = min((step - self.warmup_steps) / (self.total_steps - self.warmup_steps), 1.0)
        if self.kind == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            factor = 1.0 - progress
        return self.min_lr + (self.lr - self.min_lr) * factor

    def state_dict(self) -> dict[str, Any]:
        """For checkpoints: the schedule the saved steps were taken with."""
        return {"kind": self.kind, "lr": self.lr, "min_lr": self.min_lr,
                "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


@dataclass(frozen=True, kw_only=True)
class StepOutcome:
    """What the optimizer step did (for the step event)."""

    lr: float
    grad_norm: float | None
    """The global gradient norm before clipping (None without ``--clip-grad``)."""
    skipped: bool
    """The fp16 scaler found an inf/NaN gradient and skipped the step (same on every rank)."""
    scale: float | None
    """The fp16 loss scale after the step (None without the scaler)."""


class OptimizerStep:
    """Division by the global units, unscale, clip, learning rate, optimizer step, zero."""

    def __init__(self, config: TrainConfig, optimizer: torch.optim.Optimizer,
                 parameters: list[nn.Parameter], device: torch.device, world: int,
                 total_steps: int) -> None:
        self.optimizer, self.parameters, self.world = optimizer, parameters, world
        self.clip = config.clip_grad
        self.schedule = LRSchedule(kind=config.lr_schedule, lr=config.lr, min_lr=config.min_lr,
                                   warmup_steps=config.warmup_steps, total_steps=total_steps)
        self.scaler = (torch.amp.GradScaler(device.type) if config.precision == "fp16"
                       else None)

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to call backward on: scaled for fp16, else itself."""
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def step(self, step: int, global_units: float) -> StepOutcome:
        """Turn the all-reduced gradient into step ``step``'s update."""
        divide_by_global_units(self.parameters, self.world, global_units)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = None
        if self.clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.clip)
            grad_norm = float(norm)
        lr = self.schedule.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        skipped, scale = False, None
        if self.scaler is not None:
            before = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            scale = self.scaler.get_scale()
            skipped = scale < before
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepOutcome(lr=lr, grad_norm=grad_norm, skipped=skipped, scale=scale)

    def state_dict(self) -> dict[str, Any]:
        """Schedule and scaler state for checkpoints."""
        return {"schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore the scaler (the schedule is a function of the step and the flags)."""
        if state and state.get("scaler") is not None and self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
