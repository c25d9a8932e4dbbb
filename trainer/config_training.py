"""The trainer's training-feature settings: micro-batches, precision, the learning-rate
schedule, gradient clipping and evaluation. Their ``TrainConfig`` fields live in
trainer/config.py; their checks and flags live here, so config.py stays one screenful of core.

Every check raises a ``UsageError`` naming the flag before any rank joins the process group.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from profiles.errors import UsageError
from trainer.flag_types import cap_list

if TYPE_CHECKING:
    import torch

    from trainer.config import TrainConfig

PRECISIONS = ("fp32", "bf16", "fp16")
"""``--precision`` choices: full float32, or autocast to bfloat16 / float16."""
LR_SCHEDULES = ("constant", "cosine", "linear")
"""``--lr-schedule`` choices (after the linear warm-up of ``--warmup-steps``)."""

TRAINING_FIELDS = ("micro_batch", "precision", "lr_schedule", "warmup_steps", "min_lr",
                   "clip_grad", "eval_every", "eval_samples", "eval_data")
"""The ``TrainConfig`` fields whose flags ``add_training_flags`` adds (same names as dests)."""


def check_training(config: TrainConfig) -> None:
    """The checks of the training-feature fields that need nothing but the flags."""
    if config.micro_batch is not None and any(m is not None and m < 1
                                              for m in config.micro_batch):
        raise UsageError(f"--micro-batch must be >= 1 (or '-' for none), got "
                         f"{_csv(config.micro_batch)}")
    if config.precision not in PRECISIONS:
        raise UsageError(f"unknown --precision {config.precision!r}; choose one of "
                         f"{', '.join(PRECISIONS)}")
    if config.lr_schedule not in LR_SCHEDULES:
        raise UsageError(f"unknown --lr-schedule {config.lr_schedule!r}; choose one of "
                         f"{', '.join(LR_SCHEDULES)}")
    if config.warmup_steps < 0:
        raise UsageError(f"--warmup-steps must be >= 0, got {config.warmup_steps}")
    if not 0 <= config.min_lr <= config.lr:
        raise UsageError(f"--min-lr must be between 0 and --lr ({config.lr}), got "
                         f"{config.min_lr}")
    if config.clip_grad is not None and not config.clip_grad > 0:
        raise UsageError(f"--clip-grad must be > 0 (the largest global gradient norm), got "
                         f"{config.clip_grad}")
    if config.eval_every < 0:
        raise UsageError(f"--eval-every must be >= 0 (0 = no evaluation), got "
                         f"{config.eval_every}")
    if config.steps is not None and config.eval_every > config.steps:
        raise UsageError(f"--eval-every {config.eval_every} is larger than the run's "
                         f"--steps {config.steps}: no evaluation would ever happen")
    if config.eval_data is not None and config.task != "causal_lm":
        raise UsageError("--eval-data is the causal_lm task's held-out file; image tasks "
                         "evaluate --eval-samples (or CIFAR's test batch), user tasks their "
                         "own eval_data")
    if config.eval_samples is not None and config.eval_samples < 1:
        raise UsageError(f"--eval-samples must be >= 1, got {config.eval_samples}")
    if config.steps is not None and config.warmup_steps > config.steps:
        raise UsageError(f"--warmup-steps {config.warmup_steps} is larger than the run's "
                         f"--steps {config.steps}")


def check_training_world(config: TrainConfig, world_size: int) -> None:
    """The checks that need the world size."""
    if config.micro_batch is not None and len(config.micro_batch) not in (1, world_size):
        raise UsageError(f"--micro-batch {_csv(config.micro_batch)} has "
                         f"{len(config.micro_batch)} entries: give one (for every rank) or "
                         f"{world_size} (one per rank)")


def check_total_steps(config: TrainConfig, total_steps: int) -> None:
    """Checks against the run's length once it is known (``--epochs`` gives it from the data)."""
    if config.eval_every > total_steps:
        raise UsageError(f"--eval-every {config.eval_every} is larger than the run's "
                         f"{total_steps} steps: no evaluation would ever happen")
    if config.warmup_steps > total_steps:
        raise UsageError(f"--warmup-steps {config.warmup_steps} is larger than the run's "
                         f"{total_steps} steps")


def check_precision(precision: str, device: torch.device) -> None:
    """A precision the rank's device cannot do is a usage error (before any collective)."""
    import torch  # the flags are parsed before torch loads

    if precision == "fp16" and device.type != "cuda":
        raise UsageError(f"--precision fp16 needs a GPU (it uses a gradient scaler); this rank "
                         f"runs on {device.type}: use --precision bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--precision bf16: {torch.cuda.get_device_name(device)} cannot do "
                         "bfloat16; use --precision fp16 or fp32")


def micro_batches(config: TrainConfig, world_size: int) -> tuple[int | None, ...]:
    """Every rank's ``--micro-batch`` (None: the whole share in one pass)."""
    given = config.micro_batch or (None,)
    return given * world_size if len(given) == 1 else tuple(given)


def add_training_flags(parser: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    """The flags of ``TRAINING_FIELDS`` (defaults from ``defaults``)."""
    d = defaults
    g = parser.add_argument_group("memory and precision")
    g.add_argument("--micro-batch", type=cap_list, default=None, metavar="N|n0,n1,...",
                   help="largest forward/backward pass per rank: a larger share runs as "
                   "several passes with gradient accumulation (one all-reduce per step). One "
                   "value for every rank or one per rank ('-' = no limit); a stored profile's "
                   "memory cap lowers it further")
    g.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="fp32, or autocast to bf16 (CPU and recent GPUs) or fp16 (GPUs, with a "
                   "gradient scaler)")
    g = parser.add_argument_group("learning-rate schedule and clipping")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule,
                   help="how the learning rate moves from --lr to --min-lr after the warm-up")
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="learning-rate warm-up: steps rising linearly to --lr")
    g.add_argument("--min-lr", type=float, default=d.min_lr,
                   help="the learning rate at the last step (cosine and linear)")
    g.add_argument("--clip-grad", type=float, default=None, metavar="NORM",
                   help="clip the global gradient norm (over the all-reduced gradient) to NORM")
    g = parser.add_argument_group("evaluation")
    g.add_argument("--eval-every", type=int, default=d.eval_every,
                   help="evaluate the held-out set every N steps and after the last (0 = never)")
    g.add_argument("--eval-samples", type=int, default=None,
                   help="held-out items to evaluate (default: the task's whole eval set; "
                   "synthetic images: 512 generated)")
    g.add_argument("--eval-data", default=None, metavar="FILE",
                   help="causal_lm: held-out .txt/.jsonl file in the data's format "
                   "(or the task option eval_fraction)")


def _csv(values: Sequence[object]) -> str:
    return ",".join("-" if v is None else str(v) for v in values)
