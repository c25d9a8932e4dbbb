"""Benchmark machinery: time a training step at several batch sizes and fit ``t(b) = a + c*b``.

The caller supplies the step (``trainer.profile_model`` builds one: forward + backward of a model on
synthetic input, with the slowdown emulation); this module knows nothing about models. It
warms up, takes the median of repeated timings with CUDA synchronisation, fits the line, and
finds the largest batch that fits in memory (CUDA: grow until out-of-memory; CPU: a cap from
available RAM and the measured memory per sample).
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from profiles import host
from profiles.profile import Profile, utc_now_iso
from profiles.user_errors import UsageError

StepFn = Callable[[int], "float | None"]
"""Runs one step at the given local batch. It may return the seconds it measured itself (for
example forward + backward without building the input, slowdown included); when it returns
None the wall time around the call is used."""


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """How to benchmark a step."""

    batches: tuple[int, ...] = (8, 16, 32)
    """Local batch sizes to time (at least one; two or more distinct ones to fit a slope)."""
    warmup: int = 2
    """Untimed steps at each batch size before timing (allocator, kernels, caches)."""
    repeats: int = 5
    """Timed steps per batch size; the median is kept."""
    find_max_batch: bool = True
    """Whether to look for the largest batch that fits in memory."""
    max_batch_limit: int = 1 << 16
    """Never try (CUDA) or report (CPU) a batch above this."""
    memory_headroom: float = 0.9
    """Fraction of the memory limit a reported max batch may use: room for optimizer state,
    DDP buckets and fragmentation that a solo forward+backward does not show."""

    def __post_init__(self) -> None:
        if not self.batches or any(b < 1 for b in self.batches):
            raise ValueError(f"batches must be positive integers, got {self.batches}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.max_batch_limit < max(self.batches):
            raise ValueError("max_batch_limit must be at least the largest benchmarked batch")
        if not 0 < self.memory_headroom <= 1:
            raise ValueError(f"memory_headroom must be in (0, 1], got {self.memory_headroom}")


class BatchTooLargeError(UsageError):
    """A benchmarked batch size does not fit in the device's memory."""

    title = "batch too large"


# -- timing ------------------------------------------------------------------------------------


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def time_step(step: StepFn, batch: int, *, device: str = "cpu") -> float:
    """Seconds for one step at ``batch``: what the step reports, else synchronised wall time."""
    _synchronize(device)  # queued work from before must not count
    start = time.perf_counter()
    reported = step(batch)
    _synchronize(device)
    elapsed = time.perf_counter() - start
    return float(reported) if reported is not None else elapsed


def measure(
    step: StepFn, batch: int, *, device: str = "cpu", warmup: int = 2, repeats: int = 5
) -> float:
    """Median seconds per step at ``batch`` after ``warmup`` untimed steps."""
    for _ in range(warmup):
        step(batch)
    return statistics.median(time_step(step, batch, device=device) for _ in range(repeats))


# -- fit -----------------------------------------------------------------------------------


def fit_linear(batches: Sequence[int], times: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``t(b) = a + c*b`` with ``a >= 0`` and ``c >= 0``; returns ``(a, c)``.

    Without the constraints noise can give a negative fixed cost or a falling line; the
    constrained optimum is then on a boundary: a line through the origin (``a = 0``) or a
    constant (``c = 0``), whichever fits better.
    """
    if len(batches) != len(times) or not batches:
        raise ValueError("fit needs one time per batch size")
    xs = [float(b) for b in batches]
    ys = [float(t) for t in times]
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx > 0:
        c = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
        a = mean_y - c * mean_x
        if a >= 0 and c >= 0:
            return a, c

    def sse(a: float, c: float) -> float:
        return sum((a + c * x - y) ** 2 for x, y in zip(xs, ys, strict=True))

    slope = sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)
    through_origin = (0.0, max(0.0, slope))
    constant = (max(0.0, mean_y), 0.0)
    return min((through_origin, constant), key=lambda ac: sse(*ac))


# -- largest batch -------------------------------------------------------------------------


def _is_oom(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text  # CUDA / CPU allocator
    )


def _free_device_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _measure_if_it_fits(
    step: StepFn, batch: int, *, device: str, config: BenchConfig
) -> float | None:
    """``measure`` at ``batch``, or None (memory freed) when it runs out of memory."""
    try:
        return measure(step, batch, device=device, warmup=config.warmup, repeats=config.repeats)
    except (RuntimeError, MemoryError) as exc:
        if not _is_oom(exc):
            raise
    _free_device_memory(device)  # after the except block: its traceback pins the tensors
    return None


def fits(step: StepFn, batch: int, *, device: str) -> bool:
    """Run one step at ``batch``; False (memory freed) when it runs out of memory."""
    out_of_memory = False
    try:
        step(batch)
        _synchronize(device)
    except (RuntimeError, MemoryError) as exc:
        if not _is_oom(exc):
            raise
        out_of_memory = True  # free after the except block: the traceback pins the tensors
    if out_of_memory:
        _free_device_memory(device)
    return not out_of_memory


def largest_fitting(try_batch: Callable[[int], bool], start: int, limit: int) -> int | None:
    """Largest batch in ``[start, limit]`` for which ``try_batch`` holds, to within 1/16.

    Doubles from ``start`` until a batch fails (or ``limit``), then bisects the last gap until
    it is under a sixteenth of the known-good batch. None when ``start`` itself fails.
    """
    if not try_batch(start):
        return None
    good, bad = start, None
    while bad is None and good < limit:
        candidate = min(good * 2, limit)
        if try_batch(candidate):
            good = candidate
        else:
            bad = candidate
    while bad is not None and bad - good > max(1, good // 16):
        middle = (good + bad) // 2
        if try_batch(middle):
            good = middle
        else:
            bad = middle
    return good


def max_batch_cuda(step: StepFn, *, device: str, start: int, config: BenchConfig) -> int | None:
    """Largest CUDA batch that fits (grow until out-of-memory), times the headroom."""
    found = largest_fitting(lambda b: fits(step, b, device=device), start, config.max_batch_limit)
    return max(1, int(found * config.memory_headroom)) if found else None


def step_footprint(step: StepFn, batch: int, *, repeats: int = 2) -> int | None:
    """Bytes one step at ``batch`` adds to the process at its peak (largest of ``repeats``).

    Freed heap is handed back to the OS and the peak RSS reset before each step, so the peak
    shows what the step itself touches. None where the OS cannot reset the peak.
    """
    growth = []
    for _ in range(repeats):
        gc.collect()
        host.trim_heap()
        if not host.reset_peak_rss():
            return None
        before = host.process_rss()
        step(batch)
        peak = host.peak_rss()
        if before is None or peak is None:
            return None
        growth.append(peak - before)
    return max(growth)


def max_batch_cpu(step: StepFn, *, low: int, high: int, config: BenchConfig) -> int | None:
    """CPU batch cap from available RAM and the per-sample footprint between two batches.

    The memory a step adds at its peak is measured at ``low`` and ``high``; the line through
    them gives bytes per sample and a fixed part, and the cap is the batch whose step would
    use ``memory_headroom`` of the RAM available now. None when it cannot be measured (equal
    batches, no RAM figure, no peak reset on this OS, or no growth seen).
    """
    if high <= low:
        return None
    low_bytes = step_footprint(step, low)
    high_bytes = step_footprint(step, high)
    available = host.ram_available()
    if low_bytes is None or high_bytes is None or available is None:
        return None
    per_sample = (high_bytes - low_bytes) / (high - low)
    if per_sample <= 0:
        return None
    fixed = max(0.0, low_bytes - per_sample * low)
    cap = math.floor((available * config.memory_headroom - fixed) / per_sample)
    return max(1, min(cap, config.max_batch_limit))


# -- the whole benchmark ---------------------------------------------------------------------


def device_name(device: str) -> str:
    """The GPU's name for ``cuda:N``, else the CPU model."""
    if device.startswith("cuda"):
        import torch

        return str(torch.cuda.get_device_name(device))
    return host.cpu_model() or "unknown CPU"


def benchmark(
    step: StepFn,
    *,
    model: str,
    device: str = "cpu",
    slowdown: float = 1.0,
    threads: int | None = None,
    config: BenchConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> Profile:
    """Profile ``step`` on ``device``: median step time per batch, the fit, the largest batch.

    ``model``, ``slowdown`` and ``threads`` (default ``torch.get_num_threads()``) are recorded
    in the profile: the step must already run with them (the slowdown emulated inside it).
    ``progress`` receives one line per phase.
    """
    import torch

    config = config or BenchConfig()
    say = progress or (lambda line: None)
    batches = tuple(sorted(set(config.batches)))

    times = []
    for batch in batches:
        say(f"timing batch {batch}")
        seconds = _measure_if_it_fits(step, batch, device=device, config=config)
        if seconds is None:
            raise BatchTooLargeError(
                f"batch {batch} runs out of memory on {device}; benchmark smaller batches "
                "(--batches)"
            )
        times.append(seconds)
    a, c = fit_linear(batches, times)

    max_batch = None
    if config.find_max_batch:
        say("finding the largest batch")
        if device.startswith("cuda"):
            max_batch = max_batch_cuda(step, device=device, start=batches[-1], config=config)
            _free_device_memory(device)  # hand the search's cached blocks back
        else:
            max_batch = max_batch_cpu(step, low=batches[0], high=batches[-1], config=config)

    return Profile(
        host=host.hostname(),
        device=device,
        device_name=device_name(device),
        model=model,
        torch_version=str(torch.__version__),
        threads=threads if threads is not None else torch.get_num_threads(),
        slowdown=float(slowdown),
        created=utc_now_iso(),
        batches=batches,
        step_s=tuple(times),
        a=a,
        c=c,
        max_batch=max_batch,
    )
