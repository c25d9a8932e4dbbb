"""Each rank's solo throughput, for the run's baselines (% of Σ solo, × fastest host).

Every rank finds what its device does alone — forward and backward of the run's model, in its
precision, at its micro-batch — from its stored profile, else a cached probe, else a probe
now (``profiles.solo``). Probes run one rank at a time, so ranks that share a machine do not
slow each other's: a probe is the device alone. Rank 0 writes every rank's figure with the
``capacity`` event (``solo_samples_per_s``, ``solo_source``); ``figures/solo.py`` derives the
ratios from them and the run's steps.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from profiles.solo import SOLO_SOURCES, Solo, solo_rate
from trainer.dist import all_gather_floats, on_any_rank
from trainer.settings.train_config import TrainConfig
from trainer.step.amp import autocast
from trainer.step.capacity import (
    BatchOf,
    Capacity,
    SoloFigures,
    initial_split,
    profile_key,
    stored_profile,
    warmup_rate,
)
from trainer.step.slowdown import emulates
from trainer.tasks import LossFn


def solo_batch(global_batch: int, micro_batch: int | None) -> int:
    """The batch a device alone would run the run's global batch in: its micro-batch."""
    return max(1, min(global_batch, micro_batch or global_batch))


def probe_batch(global_batch: int, micro_batch: int | None, world_size: int, *,
                on_cpu: bool) -> int:
    """The batch a probe times: ``solo_batch``, on a CPU no more than the equal share — the
    capacity warm-up's batch, whose rate it reuses: a CPU's passes of the whole batch would
    cost the run's start seconds per rank, one rank at a time."""
    batch = solo_batch(global_batch, micro_batch)
    return min(batch, max(1, global_batch // world_size)) if on_cpu else batch


def split_and_solo(
    config: TrainConfig, *, world_size: int, rank: int, model: nn.Module, loss: LossFn,
    batch_of: BatchOf, device: torch.device, slowdown: float, host: str, device_name: str,
    resumed_split: tuple[int, ...] | None,
) -> Capacity:
    """``initial_split``, then every rank's solo figure at its micro-batch (collective)."""
    capacity = initial_split(
        config, world_size=world_size, rank=rank, model=model, loss=loss, batch_of=batch_of,
        device=device, slowdown=slowdown, host=host, device_name=device_name,
        resumed_split=resumed_split)
    warmed = capacity.samples_per_s[rank] if capacity.source == "warmup" else None
    solo = solo_figures(
        config, world_size=world_size, rank=rank, model=model, loss=loss, batch_of=batch_of,
        device=device, slowdown=slowdown, host=host, device_name=device_name,
        emulated_run=on_any_rank(emulates(config.slowdown, config.slowdown_at), device),
        micro_batch=capacity.micro_batch, warmed=warmed)
    return replace(capacity, solo=solo)


def solo_figures(
    config: TrainConfig, *, world_size: int, rank: int, model: nn.Module, loss: LossFn,
    batch_of: BatchOf, device: torch.device, slowdown: float, emulated_run: bool, host: str,
    device_name: str, micro_batch: tuple[int | None, ...], warmed: float | None = None,
) -> SoloFigures:
    """Every rank's solo figure (collective: every rank calls it). Ranks that must probe do so
    one after the other; a rank with a profile or a cached probe measures nothing, nor does a
    CPU rank whose capacity warm-up (``warmed``: its samples/s) timed the probe's batch."""
    profile, _ = stored_profile(config, slowdown, host, device_name,
                                on_gpu=device.type == "cuda")
    on_cpu = device.type == "cpu"
    batch = (solo_batch(config.global_batch, micro_batch[rank]) if profile is not None else
             probe_batch(config.global_batch, micro_batch[rank], world_size, on_cpu=on_cpu))
    key = profile_key(config, slowdown, host, device_name)

    def probe() -> float:
        if on_cpu and warmed:  # the warm-up timed these passes already
            return warmed
        # The training's random streams as they were (dropout draws in the timed passes):
        # a run with a probe trains exactly as one without.
        # In the run's arithmetic (its autocast; TF32 is already set for the run).
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                autocast(config.precision, device):
            try:
                return warmup_rate(model, loss, batch_of(batch), device,
                                   config.capacity_passes, slowdown, emulated_run)
            except torch.cuda.OutOfMemoryError:  # the whole batch in one pass does not fit
                model.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                return 0.0

    def figure(measure: bool) -> Solo:
        return solo_rate(key, precision=config.precision, batch=batch, profile=profile,
                         probe=probe if measure else lambda: 0.0, emulated=emulated_run)

    known = figure(measure=False)  # the profile or the cache: no work
    needs = [row[0] > 0 for row in all_gather_floats([float(known.source == "unknown")],
                                                     device)]
    mine = known
    for turn in (r for r, need in enumerate(needs) if need):  # one prober at a time
        if turn == rank:
            mine = figure(measure=True)
        all_gather_floats([0.0], device)  # the turn ends for every rank together
    rows = all_gather_floats([mine.samples_per_s or 0.0,
                              float(SOLO_SOURCES.index(mine.source)), float(batch)], device)
    return SoloFigures(
        samples_per_s=tuple(row[0] if row[0] > 0 else None for row in rows),
        source=tuple(SOLO_SOURCES[int(row[1])] for row in rows),
        batch=tuple(int(row[2]) for row in rows))


def solo_fields(solo: SoloFigures | None) -> dict[str, Any]:
    """The ``capacity`` event's solo fields (empty without figures: a joiner's)."""
    if solo is None:
        return {}
    return {"solo_samples_per_s": solo.samples_per_s, "solo_source": solo.source,
            "solo_batch": solo.batch}
