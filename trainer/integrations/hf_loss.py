"""What the Hugging Face opt-in reads of the Trainer's loss: whether any split of the global
batch gives the parameters of one process (``exactness``), and the loss units of one
accumulation round (``target_tokens``)."""

from __future__ import annotations

from typing import Any

import torch

TRUSTED_LOSS_MODULES = ("transformers.", "trl.")
"""Packages whose ``compute_loss`` keeps the token average over every rank."""


def exactness(trainer: Any) -> tuple[bool, str]:
    """``(exact, why not)``: whether any split gives the same parameters as one process."""
    args = trainer.args
    if getattr(trainer, "compute_loss_func", None) is not None:
        return False, ("a compute_loss_func is set: exact only when it sums the loss and divides "
                       "by num_items_in_batch")
    for klass in type(trainer).__mro__:
        if "compute_loss" in vars(klass) and klass.__name__ != "_CorralShares":
            module = klass.__module__ + "."
            if not module.startswith(TRUSTED_LOSS_MODULES):
                return False, (f"{klass.__name__}.compute_loss is the script's own: corral "
                               "cannot tell that it averages over every rank's tokens")
            break
    if not getattr(args, "average_tokens_across_devices", False):
        return False, "average_tokens_across_devices is off: each rank's loss is its own mean"
    if not getattr(trainer, "model_accepts_loss_kwargs", False):
        return False, ("the model takes no num_items_in_batch: each rank's loss is its own "
                       "mean")
    if args.bf16 or args.fp16:
        return False, (f"{'bf16' if args.bf16 else 'fp16'} autocast rounds each rank's share "
                       "on its own: a different split gives slightly different parameters")
    return True, ""


def target_tokens(trainer: Any, inputs: dict[str, Any]) -> torch.Tensor | int:
    """The loss units of one round: target tokens, counted as the Trainer counts them (a
    tensor on the labels' device: read with the step's gather, not here)."""
    if "shift_labels" in inputs:
        labels = inputs["shift_labels"]
    elif "labels" in inputs:
        labels = inputs["labels"]
        if getattr(trainer, "_loss_shifts_labels", True):
            labels = labels[..., 1:]
    else:
        return 0
    return labels.ne(-100).sum()
