"""The ``resources`` event: a periodic sample of a rank's device and process
(docs/events.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, kw_only=True)
class ResourceEvent:
    """A periodic resource sample of this rank's device and process (every few seconds)."""

    kind: ClassVar[str] = "resources"
    t: float
    rank: int
    gpu_util: float | None = None
    """GPU (SM) utilisation, percent, from NVML: the part of the last sample period in which a
    kernel ran on the GPU; None on CPU or when NVML cannot tell."""
    gpu_mem_used: int | None = None
    """Bytes in use on this rank's GPU."""
    gpu_mem_total: int | None = None
    cpu_percent: float | None = None
    """This process's CPU use, percent of one core (can exceed 100 with several threads)."""
    rss_bytes: int | None = None
    """This process's resident memory."""
    gpu_peak_allocated: int | None = None
    """The most bytes this rank's tensors have held on its GPU since it started (torch's
    ``max_memory_allocated``); None on CPU."""
    gpu_peak_reserved: int | None = None
    """The most bytes torch's caching allocator has reserved on the GPU for this rank
    (``max_memory_reserved``: what the rank needs of the GPU's memory); None on CPU."""

