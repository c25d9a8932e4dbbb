"""Periodic resource samples of one rank, taken off the training thread.

A daemon thread samples every ``interval_s``: this process's CPU use and resident memory and,
for a CUDA device, the GPU's utilisation and memory through the NVML wrapper. The training
loop calls ``poll()`` between steps; it never blocks and returns the newest sample not yet
returned, so a slow step simply skips samples. The trainer turns samples into ``resources``
events (``docs/events.md``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import ModuleType

from profiles import host
from profiles.nvml import NvmlSession
from profiles.user_errors import UsageError


@dataclass(frozen=True, kw_only=True)
class ResourceSample:
    """One sample; any value that cannot be measured is None."""

    t: float
    """Unix time of the sample, seconds."""
    gpu_util: float | None = None
    """GPU utilisation, percent (None on CPU or without NVML)."""
    gpu_mem_used: int | None = None
    """Bytes in use on the rank's GPU (all processes)."""
    gpu_mem_total: int | None = None
    cpu_percent: float | None = None
    """This process's CPU use since the previous sample, percent of one core."""
    rss_bytes: int | None = None
    """This process's resident memory."""


def cuda_index(device: str) -> int | None:
    """The CUDA index of ``cuda`` / ``cuda:N``; None for ``cpu``. Raises UsageError otherwise."""
    if device == "cpu":
        return None
    if device == "cuda":
        return 0
    prefix, _, index = device.partition(":")
    if prefix == "cuda" and index.isdigit():
        return int(index)
    raise UsageError(f"device must be 'cpu' or 'cuda:N', got {device!r}")


class ResourceSampler:
    """Samples this process (and its GPU) every ``interval_s`` in a daemon thread.

    Use ``start()`` once, ``poll()`` as often as you like, ``stop()`` at the end (or the
    sampler as a context manager).
    """

    def __init__(
        self, device: str, interval_s: float = 2.0, *, nvml_module: ModuleType | None = None
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.device = device
        self.interval_s = interval_s
        self._cuda_index = cuda_index(device)
        self._nvml_module = nvml_module
        self._nvml: NvmlSession | None = None
        self._gpu_handle: object | None = None
        self._gpu_looked = False
        self._lock = threading.Lock()
        self._latest: ResourceSample | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_cpu: tuple[float, float] | None = None  # (wall, cpu seconds)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> ResourceSampler:
        """Start sampling; the first sample arrives after one interval."""
        if self._thread is not None:
            raise RuntimeError("ResourceSampler.start() called twice")
        self._last_cpu = (time.monotonic(), host.process_cpu_seconds())
        self._thread = threading.Thread(
            target=self._run, name=f"corral-resources-{self.device}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling and wait for the thread to end (it ends within one sample)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        if self._nvml is not None:  # opened by sample() on a sampler that never started
            self._nvml.close()
            self._nvml = None

    @property
    def running(self) -> bool:
        """True while the sampling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> ResourceSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading -------------------------------------------------------------------------------

    def poll(self) -> ResourceSample | None:
        """The newest sample not returned before, or None. Never blocks on sampling."""
        with self._lock:
            sample, self._latest = self._latest, None
        return sample

    def sample(self) -> ResourceSample:
        """Take a sample now, in the calling thread (CPU percent since the previous one).

        For a sampler that was not started (one-off samples); a started one samples itself.
        """
        now = time.monotonic()
        cpu = host.process_cpu_seconds()
        cpu_percent = None
        if self._last_cpu is not None and now > self._last_cpu[0]:
            cpu_percent = 100.0 * (cpu - self._last_cpu[1]) / (now - self._last_cpu[0])
        self._last_cpu = (now, cpu)
        gpu_util, gpu_used, gpu_total = self._gpu()
        return ResourceSample(
            t=time.time(),
            gpu_util=gpu_util,
            gpu_mem_used=gpu_used,
            gpu_mem_total=gpu_total,
            cpu_percent=cpu_percent,
            rss_bytes=host.process_rss(),
        )

    # -- internals -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self.interval_s):  # the wait is the sampling period
                sample = self.sample()
                with self._lock:
                    self._latest = sample
        finally:
            if self._nvml is not None:
                self._nvml.close()
                self._nvml = None

    def _gpu(self) -> tuple[float | None, int | None, int | None]:
        """``(utilisation %, used bytes, total bytes)`` of the rank's GPU, None when unknown."""
        if self._cuda_index is None:
            return None, None, None
        if not self._gpu_looked:  # open NVML once, in the sampling thread
            self._gpu_looked = True
            self._nvml = NvmlSession.open(self._nvml_module)
            if self._nvml is not None:
                self._gpu_handle = self._nvml.handle_for_cuda_device(self._cuda_index)
        if self._nvml is None or self._gpu_handle is None:
            return None, None, None
        memory = self._nvml.memory(self._gpu_handle)
        return (
            self._nvml.utilization(self._gpu_handle),
            memory[2] if memory else None,
            memory[0] if memory else None,
        )
