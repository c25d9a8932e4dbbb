"""Fixtures for the profiles tests: a fake NVML and two made-up GPUs."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

FAKE_PYNVML = Path(__file__).with_name("fake_pynvml.py")

GIB = 1 << 30
H100: dict[str, Any] = {
    "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-11111111-aaaa", "total": 80 * GIB,
    "free": 79 * GIB, "used": 1 * GIB, "cc": [9, 0], "util": 35, "power_mw": 312_500,
}
T4: dict[str, Any] = {
    "name": "Tesla T4", "uuid": "GPU-22222222-bbbb", "total": 16 * GIB, "free": 10 * GIB,
    "used": 6 * GIB, "cc": [7, 5], "util": 97, "power_mw": 70_000, "name_bytes": True,
}


def load_fake_pynvml() -> ModuleType:
    """A fresh instance of the fake module (its own state)."""
    spec = importlib.util.spec_from_file_location("pynvml", FAKE_PYNVML)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> Callable[..., ModuleType]:
    """``fake_nvml(gpus, driver=..., init_error=...)`` installs a fake as ``pynvml``."""

    def install(
        gpus: list[dict[str, Any]], *, driver: str = "550.54.15", init_error: bool = False
    ) -> ModuleType:
        module = load_fake_pynvml()
        module.configure({"gpus": [dict(g) for g in gpus], "driver": driver,
                          "init_error": init_error})
        monkeypatch.setitem(sys.modules, "pynvml", module)
        return module

    return install


@pytest.fixture
def h100() -> dict[str, Any]:
    """A made-up H100 as the fake NVML describes it."""
    return dict(H100)


@pytest.fixture
def t4() -> dict[str, Any]:
    """A made-up T4 whose name comes back as bytes (old bindings)."""
    return dict(T4)
