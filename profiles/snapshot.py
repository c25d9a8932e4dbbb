"""What a host is: a frozen snapshot of its CPU, memory, software and GPUs.

``python -m profiles --json`` prints ``HostSnapshot.to_dict()``; the remote layer's check reads
it back with ``HostSnapshot.from_dict``. The keys are documented in ``docs/profiles.md`` and are
a contract: add keys, never rename or remove them.
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from profiles import host
from profiles.nvml import GpuInfo, query_nvml
from profiles.user_errors import CorralError

GPU_KEYS = tuple(f.name for f in dataclasses.fields(GpuInfo))
"""The keys of each object in the snapshot's ``gpus`` list."""


class SnapshotFormatError(CorralError):
    """A host snapshot (JSON from ``python -m profiles --json``) is malformed."""

    title = "bad host snapshot"


@dataclass(frozen=True, kw_only=True)
class HostSnapshot:
    """One host at one moment. Anything the host cannot tell is None; bytes are raw."""

    hostname: str
    os: str
    """Distribution and kernel, e.g. ``Debian GNU/Linux 12 (bookworm); Linux 6.1.0 x86_64``."""
    python_version: str
    torch_version: str | None
    """``torch.__version__``; None when torch does not import."""
    cuda_available: bool
    """``torch.cuda.is_available()``."""
    cuda_device_count: int
    """GPUs torch can use (after ``CUDA_VISIBLE_DEVICES``)."""
    cpu_model: str | None
    physical_cores: int | None
    logical_cores: int | None
    ram_total: int | None
    """Bytes of RAM this process may use (a cgroup limit when smaller than the machine)."""
    ram_available: int | None
    """Bytes of RAM still available when the snapshot was taken."""
    driver_version: str | None
    """NVIDIA driver version; None without NVML or a driver."""
    gpus: tuple[GpuInfo, ...] = ()
    """Every GPU NVML sees (all of them, in NVML order)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with exactly the documented keys; ``gpus`` is a list of dicts."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["gpus"] = [dataclasses.asdict(gpu) for gpu in self.gpus]
        return data

    @classmethod
    def from_dict(cls, data: object) -> HostSnapshot:
        """Read ``to_dict`` output back; unknown keys are ignored, bad ones raise.

        Raises SnapshotFormatError naming the key that is missing or has the wrong type.
        """
        if not isinstance(data, dict):
            raise SnapshotFormatError(f"host snapshot must be a JSON object, got {_kind(data)}")
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name == "gpus":
                continue
            if field.name not in data:
                raise SnapshotFormatError(f"host snapshot is missing the key {field.name!r}")
            values[field.name] = _check(field.name, data[field.name], _SNAPSHOT_TYPES[field.name])
        gpus = data.get("gpus", [])
        if not isinstance(gpus, list):
            raise SnapshotFormatError(f"host snapshot key 'gpus' must be a list, got {_kind(gpus)}")
        values["gpus"] = tuple(_gpu_from_dict(i, item) for i, item in enumerate(gpus))
        return cls(**values)


# The JSON types each key accepts (None allowed where the dataclass says ``| None``).
_SNAPSHOT_TYPES: dict[str, tuple[type, ...]] = {
    "hostname": (str,),
    "os": (str,),
    "python_version": (str,),
    "torch_version": (str, type(None)),
    "cuda_available": (bool,),
    "cuda_device_count": (int,),
    "cpu_model": (str, type(None)),
    "physical_cores": (int, type(None)),
    "logical_cores": (int, type(None)),
    "ram_total": (int, type(None)),
    "ram_available": (int, type(None)),
    "driver_version": (str, type(None)),
}
_GPU_TYPES: dict[str, tuple[type, ...]] = {
    "index": (int,),
    "name": (str, type(None)),
    "memory_total": (int, type(None)),
    "memory_free": (int, type(None)),
    "compute_capability": (str, type(None)),
    "utilization": (float, int, type(None)),
    "power_w": (float, int, type(None)),
}


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _check(key: str, value: object, types: tuple[type, ...]) -> Any:
    # bool is an int in Python; a JSON true is never a count or a byte size.
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise SnapshotFormatError(
            f"host snapshot key {key!r} must be {wanted}, got {_kind(value)}"
        )
    return float(value) if isinstance(value, int) and float in types else value


def _gpu_from_dict(position: int, item: object) -> GpuInfo:
    if not isinstance(item, dict):
        raise SnapshotFormatError(f"host snapshot gpus[{position}] must be an object")
    values = {}
    for key, types in _GPU_TYPES.items():
        if key not in item:
            raise SnapshotFormatError(f"host snapshot gpus[{position}] is missing {key!r}")
        values[key] = _check(f"gpus[{position}].{key}", item[key], types)
    return GpuInfo(**values)


def _torch_facts() -> tuple[str | None, bool, int]:
    """``(version, cuda available, cuda device count)``; torch is imported only here."""
    try:
        import torch
    except Exception:
        return None, False, 0
    try:
        available = bool(torch.cuda.is_available())
        count = int(torch.cuda.device_count()) if available else 0
    except Exception:
        available, count = False, 0
    return str(torch.__version__), available, count


def take_snapshot(*, nvml_module: ModuleType | None = None) -> HostSnapshot:
    """Look at this host now. Never raises for missing hardware, drivers or libraries.

    ``nvml_module`` replaces ``pynvml`` (tests pass a fake).
    """
    torch_version, cuda_available, cuda_count = _torch_facts()
    nvml = query_nvml(nvml_module)
    return HostSnapshot(
        hostname=host.hostname(),
        os=host.os_description(),
        python_version=platform.python_version(),
        torch_version=torch_version,
        cuda_available=cuda_available,
        cuda_device_count=cuda_count,
        cpu_model=host.cpu_model(),
        physical_cores=host.physical_cores(),
        logical_cores=host.logical_cores(),
        ram_total=host.ram_total(),
        ram_available=host.ram_available(),
        driver_version=nvml.driver_version,
        gpus=nvml.gpus,
    )
