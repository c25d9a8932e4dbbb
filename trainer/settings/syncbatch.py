"""SyncBatchNorm's rule: it exchanges statistics inside every forward, so every rank must run
the same passes every step. Checked on the flags (``TrainConfig``) and again on the first split
the trainer computes (``trainer/exact_loop.py``)."""

from __future__ import annotations

from collections.abc import Sequence

from profiles.user_errors import UsageError


def check_syncbatch_flags(norm: str, micro_batch: Sequence[int | None] | None,
                          split: Sequence[int] | None, policy: str) -> None:
    """SyncBatchNorm exchanges statistics inside every forward, so every rank must run the same
    passes every step: refused with micro-batches, a split that benches a rank, or the dynamic
    policy (which may bench one). ``--norm`` is the trainer's flag only (not a ``[run]`` key)."""
    if norm != "syncbatch":
        return
    if any(m is not None for m in micro_batch or ()):
        raise UsageError("--norm syncbatch needs one pass per rank and step (its statistics are "
                         "exchanged inside each forward): drop --micro-batch, or use --norm group")
    if split and 0 in split:
        raise UsageError(f"--norm syncbatch needs every rank in every step, but --split "
                         f"{_csv(split)} benches a rank: give every rank a share, or use "
                         "--norm group")
    if policy == "dynamic":
        raise UsageError("--norm syncbatch needs every rank in every step, and --policy dynamic "
                         "may bench one: use --policy static or proportional, or use --norm group")


def check_syncbatch_device(norm: str, device_type: str) -> None:
    """torch's SyncBatchNorm is GPU-only: refused on a rank that is not on CUDA."""
    if norm == "syncbatch" and device_type != "cuda":
        raise UsageError("--norm syncbatch needs every rank on CUDA (torch's SyncBatchNorm is "
                         "GPU-only); use --norm group on CPU ranks")


def check_syncbatch_passes(norm: str, micro_batch: Sequence[int | None],
                           split: Sequence[int]) -> None:
    """SyncBatchNorm exchanges statistics inside every forward, so every rank must run the same
    passes: refused when the first split (from profiles or a warm-up) needs micro-batches or
    benches a rank (the flags' own cases are refused with the flags,
    ``trainer.settings.relations``)."""
    if norm != "syncbatch":
        return
    if any(m is not None for m in micro_batch):
        raise UsageError(f"--norm syncbatch: the first split {_csv(split)} needs micro-batches "
                         f"({_csv(micro_batch)}) to fit memory, and SyncBatchNorm needs one pass "
                         "per rank and step: use --norm group, or a smaller --global-batch")
    if 0 in split:
        raise UsageError(f"--norm syncbatch: the first split {_csv(split)} benches a rank, and "
                         "SyncBatchNorm needs every rank in every step: give each rank a share "
                         "with --split, or use --norm group")


def _csv(values: Sequence[object]) -> str:
    return ",".join("-" if v is None else str(v) for v in values)
