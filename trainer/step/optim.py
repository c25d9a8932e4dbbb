"""The optimizer side of a step: the learning-rate schedule, gradient clipping, the fp16
gradient scaler and the optimizer itself.

Everything here runs after the gradient all-reduce, on gradients that are identical on every
rank, so every rank takes the same decisions without talking: the same global norm to clip to,
the same overflow found by the scaler (an inf or NaN on one rank is in the sum on every rank),
the same skipped step and the same new scale.

Nothing here reads the device on the way to the optimizer step: the global unit count comes as
a device tensor, and the clipped gradient's norm is copied to the host behind an event
(``LateFloat``) and read when the step is reported, after the step's tally read, by which time
it is complete. fp16 is the exception: torch's ``GradScaler.step`` itself reads its overflow
flag every step, and the scale after its update is read when the step is reported.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trainer.settings.train_config import TrainConfig
from trainer.step.shard_saving import ShardedOptimizer
from trainer.step.shards import ShardedState, make_shards, own_budget
from trainer.step.state_fit import optimizer_copies
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


class LateFloat:
    """A 0-d device tensor's value, copied to the host without waiting; ``value()`` waits for
    that copy alone (on CUDA: an event right after the copy, not the work queued later)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self._event: torch.cuda.Event | None = None
        if tensor.device.type == "cuda":
            self._host = torch.empty((), dtype=tensor.dtype, pin_memory=True)
            self._host.copy_(tensor.detach(), non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = tensor.detach()

    def value(self) -> float:
        """The number (waits for the copy on CUDA)."""
        if self._event is not None:
            self._event.synchronize()
        return float(self._host)


@dataclass(frozen=True, kw_only=True)
class StepOutcome:
    """What the optimizer step did (for the step event); read it after the step's tally."""

    lr: float
    norm: LateFloat | None
    """The global gradient norm before clipping (None without ``--clip-grad``)."""
    scaled: tuple[float, LateFloat] | None
    """fp16: the loss scale before the step and (late) after it; None without the scaler."""

    @property
    def grad_norm(self) -> float | None:
        """The global gradient norm before clipping (None without ``--clip-grad``)."""
        return self.norm.value() if self.norm is not None else None

    @property
    def scale(self) -> float | None:
        """The fp16 loss scale after the step (None without the scaler)."""
        return self.scaled[1].value() if self.scaled is not None else None

    @property
    def skipped(self) -> bool:
        """The fp16 scaler found an inf/NaN gradient and skipped the step (same on every
        rank): it lowers the scale then, and only then."""
        scale = self.scale
        return self.scaled is not None and scale is not None and scale < self.scaled[0]


class OptimizerStep:
    """Division by the global units, unscale, clip, learning rate, optimizer step, zero.

    With ``shards`` (``shard_state``, trainer/step/shards.py) the optimizer steps this rank's
    slice only: the gradient is that slice's, the norm and the scaler's overflow are the whole
    gradient's (one all-reduce each), and the updated slices are gathered to every rank."""

    def __init__(self, config: TrainConfig, optimizer: torch.optim.Optimizer,
                 parameters: list[nn.Parameter], device: torch.device, world: int,
                 total_steps: int, shards: ShardedState | None = None) -> None:
        self.optimizer, self.parameters, self.world = optimizer, parameters, world
        self.shards = shards
        self.saved: torch.optim.Optimizer | ShardedOptimizer = (
            optimizer if shards is None else ShardedOptimizer(shards, optimizer))
        """What checkpoints save and load: the optimizer, or its slices seen whole."""
        self.clip = config.clip_grad
        self.schedule = LRSchedule(kind=config.lr_schedule, lr=config.lr, min_lr=config.min_lr,
                                   warmup_steps=config.warmup_steps, total_steps=total_steps)
        self.scaler: torch.amp.GradScaler | None = None
        if config.precision == "fp16" and shards is None:
            self.scaler = torch.amp.GradScaler(device.type)
        elif config.precision == "fp16":  # its overflow flag all-reduced over the world
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
            self.scaler = ShardedGradScaler(device.type)
            # A benched rank scales no loss but steps its slice: its scale made now.
            self.scaler.scale(torch.zeros((), device=device))
        self._scale: LateFloat | None = None
        self.stepped_s = 0.0
        """Wall seconds of the last ``step`` (sharded: the slice update and the gather)."""
        """The fp16 scale after the last step (complete when the next step reads it)."""

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to call backward on: scaled for fp16, else itself."""
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def step(self, step: int, global_units: float | torch.Tensor) -> StepOutcome:
        """Turn the all-reduced gradient into step ``step``'s update (``global_units`` may be
        a device tensor: nothing here waits for the device, fp16 aside)."""
        started, shards = time.perf_counter(), self.shards
        divide_by_global_units(self.parameters if shards is None else [shards.master],
                               self.world, global_units)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = None
        if self.clip is not None:
            norm = LateFloat(torch.nn.utils.clip_grad_norm_(self.parameters, self.clip)
                             if shards is None else _clip_slice(shards, self.clip))
        lr = self.schedule.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        scaled = None
        if self.scaler is not None:
            scaled = self._scaler_step()
        else:
            self.optimizer.step()
        if shards is not None:
            shards.gather()  # every rank's updated slice everywhere; the gradient zeroed
        else:
            self.optimizer.zero_grad(set_to_none=True)
        self.stepped_s = time.perf_counter() - started
        return StepOutcome(lr=lr, norm=norm, scaled=scaled)

    def exchanged_s(self, reduced_s: float) -> float:
        """The step's exchange seconds as the balancer counts them (trainer/balance/cost.py):
        ``reduced_s``, this rank's in the gradient exchange after its compute (0: not
        measured); sharded, plus the last ``step``'s slice update and gather of every slice,
        which every rank pays, a benched one too (a GPU's queued work: as ``reduced_s``)."""
        if self.shards is None or reduced_s <= 0:
            return reduced_s
        return reduced_s + self.stepped_s

    def _scaler_step(self) -> tuple[float, LateFloat]:
        """fp16: the scaler's step and update; (scale before, scale after, late)."""
        assert self.scaler is not None
        before = self._scale.value() if self._scale is not None else self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        scale = self.scaler._scale  # the tensor get_scale() would read
        self._scale = (LateFloat(scale) if scale is not None
                       else LateFloat(torch.tensor(self.scaler.get_scale())))
        return before, self._scale

    def state_dict(self) -> dict[str, Any]:
        """Schedule and scaler state for checkpoints."""
        return {"schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore the scaler (the schedule is a function of the step and the flags)."""
        if state and state.get("scaler") is not None and self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
            self._scale = None


def optimizer_step(config: TrainConfig, parameters: list[nn.Parameter], *, rank: int,
                   world: int, device: torch.device, total_steps: int,
                   joining: bool = False) -> OptimizerStep:
    """The optimizer and its step, over every parameter or, under ``shard_state``, over this
    rank's slice (trainer/step/shards.py; collective then: the budgets are gathered)."""
    shards = make_shards(config, parameters, rank=rank, world=world, device=device,
                         joining=joining)
    optimizer = make_optimizer(config, parameters if shards is None else [shards.master])
    return OptimizerStep(config, optimizer, parameters, device, world, total_steps,
                         shards=shards)


def _clip_slice(shards: ShardedState, max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_``'s arithmetic on this rank's slice, with the whole gradient's norm
    (one all-reduce); returns that norm."""
    total = shards.global_norm()
    grad = shards.master.grad
    assert grad is not None
    grad.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def warm_up(config: TrainConfig) -> None:
    """What a joiner does before it asks in, so that the run does not wait for it at the
    boundary that admits it: the first making of an optimizer imports ``torch._dynamo``
    (5-8 s of the run's time on a loaded 2-core machine, docs/benchmarks/membership.md "Live
    membership round
    2"); made here once, over a throwaway parameter, the joiner's own is made in milliseconds."""
    make_optimizer(config, [nn.Parameter(torch.zeros(1))])


def state_fields(config: TrainConfig, optim_step: OptimizerStep, rank: int,
                 device: torch.device) -> dict[str, int | None]:
    """``StartEvent``'s ``state_bytes`` and ``state_budget`` of this rank: the parameters whole,
    the gradients whole (stage 2: its slice), the optimizer's state of every element or
    (sharded) of its slice
    (trainer/step/state_fit.py); its budget as its slice was sized by, or measured. A measured
    budget is the room left once the model was built, so its parameters are added to it."""
    size = sum(p.numel() * p.element_size() for p in optim_step.parameters)
    copies, shards = optimizer_copies(config.optimizer, config.momentum), optim_step.shards
    if shards is None:
        budget = own_budget(config, rank, device)
        state = (2 + copies) * size
    else:  # stage 1 the flat gradient whole, stage 2 its slice (trainer/step/state_fit.py)
        budget = shards.budgets[shards.rank]
        whole, sliced = (2, copies) if shards.buckets is None else (1, 1 + copies)
        state = whole * size + sliced * shards.owned * shards.flat.element_size()
    if config.state_budget is None:
        budget += size
    return {"state_bytes": int(state),
            "state_budget": int(budget) if budget != float("inf") else None}
