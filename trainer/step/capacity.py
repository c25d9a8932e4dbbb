"""The initial split: given, equal, or proportional to each rank's capacity (samples/s).

Capacities come from stored profiles when every rank has one for its exact conditions, else
from a short warm-up: each rank times a few forward+backward passes at the equal share (its
emulated slowdown included) and the results are all-gathered. A profile's memory cap sets
the rank's micro-batch, never its share. Every rank takes the same branch
because the choice is made from all-gathered facts.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from profiles.profile import Profile
from profiles.store import ProfileKey, find_profile
from trainer.balance.balancer import equal_split, proportional_split
from trainer.dist import all_gather_floats, on_any_rank
from trainer.settings.train_config import TrainConfig
from trainer.settings.training_checks import micro_batches
from trainer.step.slowdown import WorkTimer, emulates
from trainer.tasks import LossFn

BatchOf = Callable[[int], Any]
"""``batch_of(n)``: a batch of the first ``n`` training items, on the rank's device."""


@dataclass(frozen=True, kw_only=True)
class Capacity:
    """The starting split and where it came from (rank 0 writes it as a ``capacity`` event)."""

    split: tuple[int, ...]
    source: Literal["profile", "warmup", "split"]
    samples_per_s: tuple[float | None, ...]
    max_batch: tuple[int | None, ...]
    """Per-rank share caps (``--max-batch``)."""
    micro_batch: tuple[int | None, ...]
    """Per-rank largest pass: ``--micro-batch``, lowered to a stored profile's memory cap."""
    detail: str
    solo: SoloFigures | None = None
    """Every rank's solo figure (``trainer/step/solo.py``; None: not found, a joiner)."""


@dataclass(frozen=True, kw_only=True)
class SoloFigures:
    """Every rank's solo throughput alone (``profiles/solo.py``), by rank."""

    samples_per_s: tuple[float | None, ...]
    """Forward+backward samples/s of the rank's device alone (None: not known)."""
    source: tuple[str, ...]
    """``profile``, ``probe`` or ``unknown``."""
    batch: tuple[int, ...]
    """The batch each figure is at: the rank's micro-batch (the global batch without one)."""


def initial_split(
    config: TrainConfig, *, world_size: int, rank: int, model: nn.Module, loss: LossFn,
    batch_of: BatchOf, device: torch.device, slowdown: float, host: str, device_name: str,
    resumed_split: tuple[int, ...] | None,
) -> Capacity:
    """Decide the split of the first step (collective: every rank must call it).

    A stored profile's memory cap no longer caps the rank's share: it becomes the rank's
    micro-batch (the share runs in several passes), so shares follow speed alone.
    """
    caps = config.max_batch or (None,) * world_size
    # Each host's launcher may pass its own --micro-batch: every rank learns every rank's.
    own_micro = micro_batches(config, world_size)[rank] or 0
    micro = tuple(int(row[0]) or None for row in all_gather_floats([own_micro], device))
    unknown: tuple[float | None, ...] = (None,) * world_size
    if resumed_split is not None or config.policy == "static" or config.split is not None:
        split = resumed_split or config.split or equal_split(config.global_batch, world_size)
        detail = ("split restored from the checkpoint" if resumed_split else
                  "given by --split" if config.split else "equal split")
        return Capacity(split=split, source="split", samples_per_s=unknown, max_batch=caps,
                        micro_batch=micro, detail=detail)

    # -- capacities from stored profiles, when every rank has one -----------------------------
    share = max(1, config.global_batch // world_size)
    profile_rate, profile_cap, reason = _profile_capacity(
        config, share, slowdown, host, device_name, on_gpu=device.type == "cuda")
    rows = all_gather_floats([profile_rate, profile_cap], device)
    micro = _merge_caps(micro, [int(row[1]) if row[1] > 0 else None for row in rows])
    if all(row[0] > 0 for row in rows):
        rates = [row[0] for row in rows]
        source: Literal["profile", "warmup"] = "profile"
        detail = "stored profiles at the equal share"
    else:
        # -- or a short warm-up: time forward+backward at the equal share on every rank -----
        # (one pass of at most the rank's micro-batch: the share may not fit in memory)
        passes, size = config.capacity_passes, min(share, micro[rank] or share)
        emulated_run = on_any_rank(emulates(config.slowdown, config.slowdown_at), device)
        own = warmup_rate(model, loss, batch_of(size), device, passes, slowdown, emulated_run)
        rates = [row[0] for row in all_gather_floats([own], device)]
        missing = [r for r, row in enumerate(rows) if row[0] <= 0]
        source = "warmup"
        detail = (f"{passes} timed passes at batch {share}; no profile on ranks "
                  f"{','.join(map(str, missing))}" + (f" ({reason})" if rank in missing else ""))
    split = proportional_split(rates, config.global_batch, max_batch=caps)
    return Capacity(split=split, source=source, samples_per_s=tuple(rates), max_batch=caps,
                    micro_batch=micro, detail=detail)


def _profile_capacity(
    config: TrainConfig, share: int, slowdown: float, host: str, device_name: str, *,
    on_gpu: bool,
) -> tuple[float, float, str]:
    """``(samples/s at share, max_batch or 0, reason)``; samples/s 0 when there is no profile."""
    profile, reason = stored_profile(config, slowdown, host, device_name, on_gpu=on_gpu)
    if profile is None:
        return 0.0, 0.0, reason
    return profile.samples_per_s(share), float(profile.max_batch or 0), reason


def profile_key(config: TrainConfig, slowdown: float, host: str, device_name: str) -> ProfileKey:
    """The store's key for this rank's device under the run's conditions."""
    return ProfileKey(host=host, device_name=device_name, model=config.model,
                      torch_version=torch.__version__, threads=torch.get_num_threads(),
                      slowdown=slowdown)


def stored_profile(
    config: TrainConfig, slowdown: float, host: str, device_name: str, *, on_gpu: bool,
) -> tuple[Profile | None, str]:
    """This rank's stored profile for the run (None and why when there is none)."""
    if config.task != "image":
        return None, f"stored profiles cover the image models, not the {config.task} task"
    try:
        # Keyed by the run's precision; a profile made before profiles recorded one ran with
        # torch's default (TF32 convolutions on a GPU): it stands in for an fp32 CPU run only.
        return find_profile(profile_key(config, slowdown, host, device_name),
                            precision=config.precision,
                            unlabelled_ok=config.precision == "fp32" and not on_gpu)
    except Exception as exc:  # a broken store must not stop training: measure instead
        return None, f"profile lookup failed: {exc}"


def _merge_caps(
    flags: Sequence[int | None], profiled: Sequence[int | None]
) -> tuple[int | None, ...]:
    """The tighter of the --micro-batch and the profile's memory cap, per rank."""
    out: list[int | None] = []
    for a, b in zip(flags, profiled, strict=True):
        out.append(b if a is None else a if b is None else min(a, b))
    return tuple(out)


def warmup_rate(
    model: nn.Module, loss: LossFn, batch: Any, device: torch.device, passes: int,
    slowdown: float, emulated_run: bool,
) -> float:
    """Items/s of forward+backward on this rank for ``batch`` (slowdown emulated, no sleep).

    Buffers (BatchNorm running statistics) are restored afterwards and gradients cleared, so
    the warm-up leaves the model exactly as it found it.
    """
    saved = {name: buf.detach().clone() for name, buf in model.named_buffers()}
    times = []
    timer = WorkTimer(cpu=device.type == "cpu")  # the rank's own time (step/slowdown.py)
    for i in range(passes + 1):  # the first pass warms caches and allocators: not counted
        _sync(device)
        timer.start()
        loss_sum, _ = loss(model, batch)
        loss_sum.backward()
        _sync(device)
        if i > 0:
            wall, own = timer.read()
            times.append(slowdown * own if emulated_run else wall)  # as the clock measures
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            buf.copy_(saved[name])
    return batch_items(batch) / statistics.median(times)


def batch_items(batch: Any) -> int:
    """How many items a collated batch holds: the leading size of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    values = batch.values() if isinstance(batch, dict) else batch
    for value in values:
        if isinstance(value, torch.Tensor | dict | list | tuple):
            return batch_items(value)
    return len(batch)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
