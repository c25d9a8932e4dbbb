"""Periodic ``resources`` events from the profiles package's sampler (skipped if absent).

The sampler measures in the background (NVML for the GPU's utilisation and memory); the loop
only polls it once per step, which never blocks, so resource reporting costs the training step
nothing noticeable. A CUDA rank adds its peak memory from torch's allocator statistics (host
counters: reading them does not wait for the GPU).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from trainer.dist import warn
from trainer.event_log import EventWriter
from trainer.events import ResourceEvent


class ResourceReporter:
    """Writes a ``resources`` event whenever the sampler has a fresh sample."""

    def __init__(self, device: str, interval_s: float, rank: int, events: EventWriter) -> None:
        self._rank = rank
        self._device = device
        self._events = events
        self._sampler: Any = None
        if interval_s <= 0:
            return
        try:
            from profiles.sampler import ResourceSampler
        except ImportError:
            return
        try:
            self._sampler = ResourceSampler(device, interval_s=interval_s)
            self._sampler.start()
        except Exception as exc:  # reporting is optional: never stop training for it
            warn(f"corral trainer: rank {rank}: resource sampling disabled ({exc})")
            self._sampler = None

    def poll(self, rank: int | None = None) -> None:
        """Emit the newest sample, if one arrived since the last poll, as ``rank``'s: this
        rank's place now (live membership moves a rank when a host before it leaves); None:
        the rank it started with."""
        if rank is not None:
            self._rank = rank
        if self._sampler is None:
            return
        try:
            sample = self._sampler.poll()
        except Exception as exc:
            warn(f"corral trainer: rank {self._rank}: resource sampling stopped ({exc})")
            self.stop()
            return
        if sample is not None:
            allocated, reserved = peak_gpu_memory(self._device)
            self._events.emit(ResourceEvent(
                t=time.time(), rank=self._rank, gpu_util=sample.gpu_util,
                gpu_mem_used=sample.gpu_mem_used, gpu_mem_total=sample.gpu_mem_total,
                cpu_percent=sample.cpu_percent, rss_bytes=sample.rss_bytes,
                gpu_peak_allocated=allocated, gpu_peak_reserved=reserved))

    def stop(self) -> None:
        """Stop the sampler (idempotent)."""
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            with contextlib.suppress(Exception):
                sampler.stop()


def peak_gpu_memory(device: str) -> tuple[int | None, int | None]:
    """(peak allocated, peak reserved) bytes of this process on ``device`` (``cuda:N``);
    (None, None) for the CPU or without CUDA."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None, None
    return (int(torch.cuda.max_memory_allocated(device)),
            int(torch.cuda.max_memory_reserved(device)))
