"""Checks of the trainer's training-feature settings: micro-batches, precision, the
learning-rate schedule, gradient clipping and evaluation (their fields: run_settings.py and
train_config.py).

Every check raises a ``UsageError`` naming the flag before any rank joins the process group.
The checks that relate these fields to others are in ``trainer.settings.relations``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from profiles.user_errors import UsageError
from trainer.settings.run_settings import Precision, device_precision

if TYPE_CHECKING:
    import torch

    from trainer.settings.train_config import TrainConfig


def check_total_steps(config: TrainConfig, total_steps: int) -> None:
    """Checks against the run's length once it is known (``--epochs`` gives it from the data)."""
    if config.eval_every > total_steps:
        raise UsageError(f"--eval-every {config.eval_every} is larger than the run's "
                         f"{total_steps} steps: no evaluation would ever happen")
    if config.warmup_steps > total_steps:
        raise UsageError(f"--warmup-steps {config.warmup_steps} is larger than the run's "
                         f"{total_steps} steps")


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    """The precision this rank computes in (``run_settings.device_precision``): ``auto``
    decided for its device (bf16 where torch says it computes in it), ``tf32`` kept on a GPU
    of compute capability 8.0+ and fp32 elsewhere, any other value itself."""
    if precision not in ("auto", "tf32"):
        return precision
    import torch

    if device.type != "cuda":
        return device_precision(precision, device.type, False)
    capable = (torch.cuda.is_bf16_supported() if precision == "auto"
               else torch.cuda.get_device_capability(device)[0] >= 8)
    return device_precision(precision, device.type, capable)


def rank_precision(precision: Precision, device: torch.device) -> Precision:
    """The precision this rank computes in, ``auto`` decided for its device
    (``resolve_precision``), refused if the device cannot do it (``check_precision``)."""
    resolved = resolve_precision(precision, device)
    check_precision(resolved, device)
    return resolved


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
