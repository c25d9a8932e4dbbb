"""The NVML wrapper turns every NVML failure into None, never an exception."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from profiles.nvml import GpuInfo, NvmlSession, query_nvml
from profiles.snapshot import take_snapshot

GIB = 1 << 30
FakeNvml = Callable[..., ModuleType]


def test_no_library_gives_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    report = query_nvml()
    assert (report.available, report.driver_version, report.gpus) == (False, None, ())
    snapshot = take_snapshot()
    assert snapshot.gpus == () and snapshot.driver_version is None


def test_driver_missing_gives_no_gpus(fake_nvml: FakeNvml, h100: dict[str, Any]) -> None:
    fake = fake_nvml([h100], init_error=True)
    report = query_nvml()
    assert (report.available, report.driver_version, report.gpus) == (False, None, ())
    assert fake.calls["shutdown"] == 0  # nothing to undo after a failed init


def test_no_devices(fake_nvml: FakeNvml) -> None:
    fake = fake_nvml([])
    report = query_nvml()
    assert report.available and report.gpus == ()
    assert report.driver_version == "550.54.15"
    assert fake.calls == {"init": 1, "shutdown": 1}


def test_two_different_gpus_in_raw_units(
    fake_nvml: FakeNvml, h100: dict[str, Any], t4: dict[str, Any]
) -> None:
    fake_nvml([h100, t4])
    report = query_nvml()
    assert report.gpus == (
        GpuInfo(index=0, name="NVIDIA H100 80GB HBM3", memory_total=80 * GIB,
                memory_free=79 * GIB, compute_capability="9.0", utilization=35.0,
                power_w=312.5),
        GpuInfo(index=1, name="Tesla T4", memory_total=16 * GIB, memory_free=10 * GIB,
                compute_capability="7.5", utilization=97.0, power_w=70.0),
    )


def test_unsupported_fields_are_none_and_the_rest_is_kept(
    fake_nvml: FakeNvml, h100: dict[str, Any], t4: dict[str, Any]
) -> None:
    t4.update(power_mw="unsupported", util="unsupported")
    fake_nvml([h100, t4], driver="unsupported")
    report = query_nvml()
    assert report.driver_version is None
    assert report.gpus[1].power_w is None and report.gpus[1].utilization is None
    assert report.gpus[1].name == "Tesla T4" and report.gpus[1].memory_total == 16 * GIB
    assert report.gpus[0].power_w == 312.5  # the other GPU is unaffected


def test_unsupported_memory_and_name(fake_nvml: FakeNvml, h100: dict[str, Any]) -> None:
    h100.update(total="unsupported", name="unsupported", cc="unsupported")
    fake_nvml([h100])
    gpu = query_nvml().gpus[0]
    assert (gpu.name, gpu.memory_total, gpu.memory_free, gpu.compute_capability) == (
        None, None, None, None)
    assert gpu.utilization == 35.0


def test_binding_without_a_function_gives_none(
    fake_nvml: FakeNvml, h100: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_nvml([h100])
    monkeypatch.delattr(fake, "nvmlDeviceGetPowerUsage")
    assert query_nvml().gpus[0].power_w is None


def test_a_gpu_whose_handle_fails_keeps_its_index(fake_nvml: FakeNvml, h100: dict[str, Any],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_nvml([h100, h100])

    def lost(index: int) -> int:
        raise fake.NVMLError("GPU is lost")

    monkeypatch.setattr(fake, "nvmlDeviceGetHandleByIndex", lost)
    assert query_nvml().gpus == (GpuInfo(index=0), GpuInfo(index=1))


def test_session_is_balanced_and_quiet_after_close(
    fake_nvml: FakeNvml, h100: dict[str, Any]
) -> None:
    fake = fake_nvml([h100])
    session = NvmlSession.open()
    assert session is not None
    handle = session.handle(0)
    session.close()
    session.close()
    assert fake.calls == {"init": 1, "shutdown": 1}
    assert session.memory(handle) is None and session.device_count() == 0


@pytest.mark.parametrize(
    ("visible", "expected"),
    [(None, 80 * GIB), ("1", 16 * GIB), ("GPU-22222222-bbbb", 16 * GIB), ("0,1", 80 * GIB)],
)
def test_cuda_index_follows_cuda_visible_devices(
    fake_nvml: FakeNvml, h100: dict[str, Any], t4: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch, visible: str | None, expected: int,
) -> None:
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    fake_nvml([h100, t4])
    session = NvmlSession.open()
    assert session is not None
    with session:
        handle = session.handle_for_cuda_device(0)
        memory = session.memory(handle)
        assert memory is not None and memory[0] == expected  # total bytes name the GPU
