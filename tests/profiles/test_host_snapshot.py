"""The host snapshot and `python -m profiles`: the JSON the remote check reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from profiles.__main__ import main as profiles_main
from profiles.nvml import GpuInfo
from profiles.snapshot import HostSnapshot, SnapshotFormatError, take_snapshot

SNAPSHOT_KEYS = {
    "hostname", "os", "python_version", "torch_version", "cuda_available",
    "cuda_device_count", "cpu_model", "physical_cores", "logical_cores", "ram_total",
    "ram_available", "driver_version", "gpus",
}
GPU_KEYS = {"index", "name", "memory_total", "memory_free", "compute_capability",
            "utilization", "power_w"}
REPO = Path(__file__).resolve().parents[2]


def test_json_has_exactly_the_documented_keys() -> None:
    # The command as the remote check runs it: its own interpreter, this host's real NVML.
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "profiles", "--json"], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) == SNAPSHOT_KEYS
    assert data["hostname"] and data["python_version"] == ".".join(
        map(str, sys.version_info[:3]))
    assert isinstance(data["logical_cores"], int) and data["ram_total"] > 0
    assert isinstance(data["gpus"], list)
    HostSnapshot.from_dict(data)  # the reader accepts what the writer wrote


def test_json_lists_every_gpu_with_the_documented_keys(
    fake_nvml: Callable[..., ModuleType], h100: dict[str, Any], t4: dict[str, Any],
    capsys: pytest.CaptureFixture[str]
) -> None:
    t4["power_mw"] = "unsupported"
    fake_nvml([h100, t4], driver="550.54.15")
    assert profiles_main(["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["driver_version"] == "550.54.15"
    assert [set(gpu) for gpu in data["gpus"]] == [GPU_KEYS, GPU_KEYS]
    assert [gpu["name"] for gpu in data["gpus"]] == ["NVIDIA H100 80GB HBM3", "Tesla T4"]
    assert data["gpus"][0]["compute_capability"] == "9.0"
    assert data["gpus"][0]["memory_total"] == 80 << 30
    assert data["gpus"][1]["power_w"] is None


def test_table_shows_the_host_and_its_gpus(
    fake_nvml: Callable[..., ModuleType], h100: dict[str, Any], t4: dict[str, Any],
    capsys: pytest.CaptureFixture[str]
) -> None:
    fake_nvml([h100, t4], driver="550.54.15")
    assert profiles_main([]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3" in out and "Tesla T4" in out
    assert "550.54.15" in out and "80.0 GiB" in out


def test_unknown_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        profiles_main(["--jsn"])
    assert exited.value.code == 2 and "--jsn" in capsys.readouterr().err


def test_round_trip_through_json() -> None:
    snapshot = take_snapshot()
    snapshot = HostSnapshot(**{**snapshot.__dict__, "gpus": (
        GpuInfo(index=0, name="A", memory_total=1, memory_free=0, compute_capability="8.6",
                utilization=12.0, power_w=None),
    )})
    assert HostSnapshot.from_dict(json.loads(json.dumps(snapshot.to_dict()))) == snapshot


def test_from_dict_ignores_unknown_keys() -> None:
    data = take_snapshot().to_dict()
    data["future_key"] = 1
    assert HostSnapshot.from_dict(data).hostname == data["hostname"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"hostname": None}, "'hostname'"),
        ({"ram_total": True}, "'ram_total'"),
        ({"gpus": {}}, "'gpus'"),
        ({"gpus": [{"index": 0}]}, "gpus[0]"),
    ],
)
def test_from_dict_names_the_bad_key(change: dict[str, Any], named: str) -> None:
    data = {**take_snapshot().to_dict(), **change}
    with pytest.raises(SnapshotFormatError, match=named.replace("[", r"\[")):
        HostSnapshot.from_dict(data)


def test_from_dict_names_a_missing_key() -> None:
    data = take_snapshot().to_dict()
    del data["cpu_model"]
    with pytest.raises(SnapshotFormatError, match="cpu_model"):
        HostSnapshot.from_dict(data)
