"""A stand-in for ``pynvml`` that describes made-up GPUs.

Installed as ``pynvml`` in ``sys.modules`` and configured with ``configure(spec)``. The spec:

    {"driver": "550.54.15", "cuda_driver": 12040, "init_error": false,
     "gpus": [{"name": ..., "uuid": ..., "total": ..., "free": ..., "used": ...,
               "cc": [9, 0], "util": 35, "power_mw": 312000, "name_bytes": false,
               "bus_id": "00000000:17:00.0", "cpu_affinity": [0, 1, 2],
               "mig": [0, 0], "minor": 0}]}

``minor`` (the GPU's device node ``nvidia<minor>``) defaults to the GPU's index.

A GPU field set to "unsupported" raises NVMLError_NotSupported, as NVML does for fields a
GPU lacks.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

UNSUPPORTED = "unsupported"


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


class NVMLError_DriverNotLoaded(NVMLError):
    pass


class NVMLError_InvalidArgument(NVMLError):
    pass


class NVMLError_Uninitialized(NVMLError):
    pass


_spec: dict[str, Any] = {"gpus": []}
calls = {"init": 0, "shutdown": 0}


def configure(spec: dict[str, Any]) -> None:
    global _spec
    _spec = spec
    calls.update(init=0, shutdown=0)


def _initialised() -> None:
    if calls["init"] <= calls["shutdown"]:
        raise NVMLError_Uninitialized()


def _gpu(handle: Any) -> dict[str, Any]:
    _initialised()
    return _spec["gpus"][handle]


def _field(handle: Any, key: str) -> Any:
    value = _gpu(handle).get(key, UNSUPPORTED)
    if value == UNSUPPORTED:
        raise NVMLError_NotSupported()
    return value


def nvmlInit() -> None:
    if _spec.get("init_error"):
        raise NVMLError_DriverNotLoaded()
    calls["init"] += 1


def nvmlShutdown() -> None:
    _initialised()
    calls["shutdown"] += 1


def _system(key: str) -> Any:
    _initialised()
    value = _spec.get(key, UNSUPPORTED)
    if value == UNSUPPORTED:
        raise NVMLError_NotSupported()
    return value


def nvmlSystemGetDriverVersion() -> str:
    return str(_system("driver"))


def nvmlSystemGetCudaDriverVersion_v2() -> int:
    return int(_system("cuda_driver"))


def nvmlDeviceGetCount() -> int:
    _initialised()
    return len(_spec["gpus"])


def nvmlDeviceGetHandleByIndex(index: int) -> int:
    _initialised()
    if not 0 <= index < len(_spec["gpus"]):
        raise NVMLError_InvalidArgument()
    return index


def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> int:
    _initialised()
    text = uuid.decode() if isinstance(uuid, bytes) else uuid
    for index, gpu in enumerate(_spec["gpus"]):
        if gpu.get("uuid") == text:
            return index
    raise NVMLError_InvalidArgument()


def nvmlDeviceGetName(handle: int) -> str | bytes:
    name = _field(handle, "name")
    return name.encode() if _gpu(handle).get("name_bytes") else name


def nvmlDeviceGetMigMode(handle: int) -> tuple[int, int]:
    current, pending = _field(handle, "mig")
    return current, pending


def nvmlDeviceGetMinorNumber(handle: int) -> int:
    return int(_gpu(handle).get("minor", handle))


def nvmlDeviceGetMemoryInfo(handle: int) -> SimpleNamespace:
    gpu = _gpu(handle)
    if UNSUPPORTED in (gpu["total"], gpu["free"], gpu["used"]):
        raise NVMLError_NotSupported()
    return SimpleNamespace(total=gpu["total"], free=gpu["free"], used=gpu["used"])


def nvmlDeviceGetCudaComputeCapability(handle: int) -> tuple[int, int]:
    major, minor = _field(handle, "cc")
    return major, minor


def nvmlDeviceGetUtilizationRates(handle: int) -> SimpleNamespace:
    return SimpleNamespace(gpu=_field(handle, "util"), memory=0)


def nvmlDeviceGetPowerUsage(handle: int) -> int:
    return int(_field(handle, "power_mw"))


def nvmlDeviceGetPciInfo(handle: int) -> SimpleNamespace:
    return SimpleNamespace(busId=_field(handle, "bus_id"))


def nvmlDeviceGetCpuAffinity(handle: int, words: int) -> list[int]:
    cores = _field(handle, "cpu_affinity")
    out = [0] * words
    for core in cores:
        out[core // 64] |= 1 << (core % 64)
    return out
