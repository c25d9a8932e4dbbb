"""The ``step`` event: one optimizer step done on a rank (docs/events.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, kw_only=True)
class StepEvent:
    """One optimizer step finished on this rank."""

    kind: ClassVar[str] = "step"
    t: float
    rank: int
    step: int
    """Steps completed so far, counting this one (the first step is 1)."""
    epoch: int
    """Epoch this step's samples came from (0-based)."""
    local_batch: int
    loss: float | None
    """Mean loss over this rank's loss units (images, or target tokens); None where corral
    does not read it (a script without the opt-in: its steps are seen from outside)."""
    compute_s: float
    """Forward + backward time on this rank (emulated slowdown included), without waiting
    for the gradient all-reduce."""
    step_s: float
    """Whole step wall time on this rank: data, compute, all-reduce, optimizer."""
    global_loss: float | None = None
    """Rank 0 only: mean loss over all loss units of the step's ``global_batch`` samples."""
    samples_per_s: float | None = None
    """Written by older runs only (``local_batch / step_s``); new events leave it None, as
    readers derive every throughput from the measurements (figures/metrics.py)."""
    cluster_samples_per_s: float | None = None
    """Written by older runs only (rank 0's ``global_batch / step_s``); derived now."""
    loss_units: int | None = None
    """This rank's loss units in the step: images, or target tokens for a language model."""
    lr: float | None = None
    """The learning rate this step used (the schedule's value)."""
    grad_norm: float | None = None
    """The global gradient norm before clipping (only with ``--clip-grad``)."""
    scaler_skipped: bool = False
    """fp16: the gradient scaler found an inf/NaN gradient and skipped this step (the same on
    every rank). A skipped step is the scaler's normal search for a scale, not divergence."""
    loss_scale: float | None = None
    """fp16: the gradient scaler's scale after this step."""
    passes: int | None = None
    """Forward/backward passes this rank ran (``ceil(local_batch / micro_batch)``)."""
    tokens: int | None = None
    """This rank's compute in tokens in the step, when shares are of tokens (variable-length
    items under a balancing policy), else None: its input tokens, padding included where its
    items are padded to the longest (what the balancer shares out; the target tokens are
    ``loss_units``)."""

