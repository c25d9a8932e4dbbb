"""The one place corral talks to NVML (pynvml, from the ``nvidia-ml-py`` distribution).

Every call is guarded: a missing library, a missing driver, no GPUs, or a field a GPU does not
support turns into ``None`` for that field (or an empty tuple of GPUs), never an exception. A
monitoring helper must not be the reason a training run stops.

Values are raw: bytes, watts, percent. Formatting belongs to whoever prints them.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")
CPU_SET_WORDS = 64
"""64-bit words asked of ``nvmlDeviceGetCpuAffinity`` (room for 4096 cores)."""


@dataclass(frozen=True, kw_only=True)
class GpuInfo:
    """One GPU as NVML reports it; any field NVML cannot tell is None."""

    index: int
    """NVML index (PCI bus order; may differ from the CUDA index under CUDA_VISIBLE_DEVICES)."""
    name: str | None = None
    """Marketing name, e.g. ``NVIDIA H100 80GB HBM3``."""
    memory_total: int | None = None
    """Bytes of device memory."""
    memory_free: int | None = None
    """Bytes of device memory free at the time of the query."""
    compute_capability: str | None = None
    """CUDA compute capability as ``"major.minor"``, e.g. ``"9.0"``."""
    utilization: float | None = None
    """GPU utilisation over NVML's last sample period, percent."""
    power_w: float | None = None
    """Power draw in watts."""


@dataclass(frozen=True, kw_only=True)
class NvmlReport:
    """Everything a one-shot NVML query found: empty when NVML is unavailable."""

    available: bool
    """True when NVML initialised (a driver is present), even with zero GPUs."""
    driver_version: str | None
    gpus: tuple[GpuInfo, ...]


def load_pynvml() -> ModuleType | None:
    """Import pynvml, or None when it is not installed (or blocked in ``sys.modules``)."""
    try:
        return importlib.import_module("pynvml")
    except Exception:  # ImportError, or a broken install raising on import
        return None


def _text(value: object) -> str | None:
    """NVML strings are ``bytes`` in old bindings and ``str`` in new ones."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


class NvmlSession:
    """An initialised NVML library; every query returns None instead of raising.

    NVML counts initialisations, so several sessions (a snapshot, a sampler thread) can be
    open at once; each ``close`` undoes its own ``open``.
    """

    def __init__(self, module: ModuleType) -> None:
        self._nvml = module
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(cls, module: ModuleType | None = None) -> NvmlSession | None:
        """Initialise NVML; None when the library or the driver is missing."""
        nvml = module if module is not None else load_pynvml()
        if nvml is None:
            return None
        try:
            nvml.nvmlInit()
        except Exception:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            return None
        return cls(nvml)

    def close(self) -> None:
        """Shut NVML down (once); later queries return None."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()

    def __enter__(self) -> NvmlSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- guarded calls -----------------------------------------------------------------------

    def _call(self, fn_name: str, *args: Any) -> Any:
        """Call ``pynvml.<fn_name>(*args)``; None on any error or when the binding lacks it."""
        if self._closed:
            return None
        fn = getattr(self._nvml, fn_name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except Exception:  # NVMLError_NotSupported, _GpuIsLost, _NoPermission, ...
            return None

    def _field(self, fn_name: str, handle: object, convert: Callable[[Any], T]) -> T | None:
        value = self._call(fn_name, handle)
        if value is None:
            return None
        try:
            return convert(value)
        except Exception:  # a binding returning something unexpected
            return None

    # -- queries -----------------------------------------------------------------------------

    def driver_version(self) -> str | None:
        """The NVIDIA driver version, e.g. ``"550.54.15"``."""
        return _text(self._call("nvmlSystemGetDriverVersion"))

    def device_count(self) -> int:
        """Number of GPUs NVML sees (0 when it cannot tell)."""
        count = self._call("nvmlDeviceGetCount")
        return count if isinstance(count, int) and count > 0 else 0

    def handle(self, index: int) -> object | None:
        """NVML's handle for the GPU at NVML ``index``, or None."""
        return self._call("nvmlDeviceGetHandleByIndex", index)

    def handle_for_cuda_device(self, cuda_index: int) -> object | None:
        """NVML's handle for the GPU that torch calls ``cuda:<cuda_index>``.

        CUDA numbers GPUs after ``CUDA_VISIBLE_DEVICES`` (and, by default, fastest first)
        while NVML numbers all GPUs in PCI order, so the index alone can name the wrong GPU.
        When torch has initialised CUDA its device UUID is exact; otherwise the visible-devices
        list is followed; otherwise the index is used as is.
        """
        uuid = _torch_device_uuid(cuda_index)
        if uuid is not None:
            found = self._call("nvmlDeviceGetHandleByUUID", uuid)
            if found is not None:
                return found
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:
            entries = [e.strip() for e in visible.split(",") if e.strip()]
            if 0 <= cuda_index < len(entries):
                entry = entries[cuda_index]
                if entry.isdigit():
                    return self.handle(int(entry))
                return self._call("nvmlDeviceGetHandleByUUID", entry)
        return self.handle(cuda_index)

    def memory(self, handle: object) -> tuple[int, int, int] | None:
        """``(total, free, used)`` bytes for a handle, or None."""
        info = self._call("nvmlDeviceGetMemoryInfo", handle)
        if info is None:
            return None
        try:
            return int(info.total), int(info.free), int(info.used)
        except Exception:
            return None

    def utilization(self, handle: object) -> float | None:
        """GPU utilisation percent for a handle, or None."""
        return self._field("nvmlDeviceGetUtilizationRates", handle, lambda r: float(r.gpu))

    def power_w(self, handle: object) -> float | None:
        """Power draw in watts (NVML reports milliwatts), or None."""
        return self._field("nvmlDeviceGetPowerUsage", handle, lambda mw: float(mw) / 1000.0)

    def compute_capability(self, handle: object) -> str | None:
        """``"major.minor"``, or None."""
        return self._field(
            "nvmlDeviceGetCudaComputeCapability", handle, lambda mm: f"{int(mm[0])}.{int(mm[1])}"
        )

    def pci_bus_id(self, handle: object) -> str | None:
        """The GPU's PCI address as NVML writes it (``"00000000:17:00.0"``), or None."""
        return self._field("nvmlDeviceGetPciInfo", handle, lambda info: _text(info.busId))

    def cpu_affinity(self, handle: object) -> frozenset[int] | None:
        """The cores NVML calls ideal for the GPU (those near it), or None."""
        words = self._call("nvmlDeviceGetCpuAffinity", handle, CPU_SET_WORDS)
        if words is None:
            return None
        try:
            cores = frozenset(64 * i + bit for i, word in enumerate(words)
                              for bit in range(64) if int(word) >> bit & 1)
        except Exception:
            return None
        return cores or None

    def gpu(self, index: int) -> GpuInfo:
        """Everything about the GPU at NVML ``index``; unknown fields are None."""
        handle = self.handle(index)
        if handle is None:
            return GpuInfo(index=index)
        memory = self.memory(handle)
        return GpuInfo(
            index=index,
            name=_text(self._call("nvmlDeviceGetName", handle)),
            memory_total=memory[0] if memory else None,
            memory_free=memory[1] if memory else None,
            compute_capability=self.compute_capability(handle),
            utilization=self.utilization(handle),
            power_w=self.power_w(handle),
        )

    def gpus(self) -> tuple[GpuInfo, ...]:
        """Every GPU NVML sees, in NVML order."""
        return tuple(self.gpu(i) for i in range(self.device_count()))


def query_nvml(module: ModuleType | None = None) -> NvmlReport:
    """Open NVML, read the driver version and every GPU, close it. Never raises."""
    session = NvmlSession.open(module)
    if session is None:
        return NvmlReport(available=False, driver_version=None, gpus=())
    with session:
        return NvmlReport(
            available=True, driver_version=session.driver_version(), gpus=session.gpus()
        )


def _torch_device_uuid(cuda_index: int) -> str | None:
    """``GPU-<uuid>`` of ``cuda:<cuda_index>`` when torch already initialised CUDA, else None.

    Never imports torch or initialises CUDA itself: that is the caller's choice to make.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_initialized():
            return None
        uuid = str(torch.cuda.get_device_properties(cuda_index).uuid)
    except Exception:
        return None
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
