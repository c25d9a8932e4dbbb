"""The probe asking a host its torch and GPUs (remote/hosts/torch_probe.py) tells what torch
would, without importing torch where NVML or torch's version.py can tell it (issue 58).

Each case runs the probe as a check runs it (``python -c TORCH_PROBE_PY DEV``) over a made-up
host: a folder of device nodes (plain files) as ``DEV``, a stand-in ``torch`` package (its
``version.py`` as a real one writes it; importing it either raises or answers as
``FAKE_TORCH`` says) and ``pynvml`` as tests/profiles/fake_pynvml.py (``FAKE_NVML``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from remote.checks.host_basics import judge_python
from remote.checks.host_facts import HostFacts
from remote.config.cluster import HostSection
from remote.events import CheckTiming
from remote.hosts.interpreter import TORCH_PROBE_PY
from remote.run.start import timing_line

REPO = Path(__file__).resolve().parents[2]
REFUSES = "raise RuntimeError('torch was imported')\n"
ANSWERS = """\
import json, os
_s = json.loads(os.environ["FAKE_TORCH"])
__version__ = _s["version"]
class version:
    cuda = _s["cuda_version"]
class cuda:
    is_available = staticmethod(lambda: _s["available"])
    device_count = staticmethod(lambda: len(_s["names"]))
    get_device_name = staticmethod(lambda i: _s["names"][i])
    get_device_capability = staticmethod(lambda i: (9, 0))
"""
PYNVML = """\
import json, os
from tests.profiles import fake_pynvml
from tests.profiles.fake_pynvml import *
fake_pynvml.configure(json.loads(os.environ["FAKE_NVML"]))
"""
NO_PYNVML = "raise ImportError(\"No module named 'pynvml'\")\n"
"""A host without nvidia-ml-py (this machine's own pynvml, found next, is hidden)."""
H200 = {"name": "NVIDIA H200", "cc": [9, 0], "mig": [0, 0]}
T4 = {"name": "Tesla T4", "cc": [7, 5], "mig": "unsupported"}


def _host(tmp_path: Path, *, cuda: str | None, init: str = REFUSES,
          nodes: tuple[str, ...] = ("nvidiactl", "nvidia-uvm", "nvidia0", "nvidia1"),
          nvml: bool = True) -> tuple[Path, Path]:
    """The made-up host: its device folder and the folder put first on its Python's path."""
    dev, site = tmp_path / "dev", tmp_path / "site"
    (site / "torch").mkdir(parents=True)
    dev.mkdir()
    for node in nodes:
        (dev / node).write_text("")
    (site / "torch" / "__init__.py").write_text(init)
    (site / "torch" / "version.py").write_text(
        "from typing import Optional\n\n__version__ = '2.11.0+cu130'\ndebug = False\n"
        f"cuda: Optional[str] = {cuda!r}\nhip: Optional[str] = None\n")
    (site / "pynvml.py").write_text(PYNVML if nvml else NO_PYNVML)
    return dev, site


def _probe(dev: Path, site: Path, *, gpus: list[dict[str, Any]] | None = None,
           cuda_driver: int = 13000, visible: str | None = None,
           torch: dict[str, Any] | None = None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(PYTHONPATH=f"{site}{os.pathsep}{REPO}", FAKE_TORCH=json.dumps(torch or {}),
               FAKE_NVML=json.dumps({"cuda_driver": cuda_driver,
                                     "gpus": [dict(g) for g in gpus or [H200, H200]]}))
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    done = subprocess.run([sys.executable, "-c", TORCH_PROBE_PY, str(dev)], env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_nvidia_gpus_are_told_from_nvml_without_importing_torch(tmp_path: Path) -> None:
    found = _probe(*_host(tmp_path, cuda="13.0"))
    assert "torch_error" not in found  # the stand-in torch raises if imported
    assert found["how"] == "nvml"
    assert (found["torch"], found["torch_full"]) == ("2.11.0", "2.11.0+cu130")
    assert (found["cuda"], found["gpus"], found["cuda_version"]) == (True, 2, "13.0")
    assert found["gpu_names"] == ["NVIDIA H200", "NVIDIA H200"]
    assert found["bf16"] == [True, True]
    assert found["seconds"] >= 0


@pytest.mark.parametrize(("visible", "gpus", "how"), [
    ("1", 1, "nvml"), ("1,0", 2, "nvml"), ("", 0, "nvml"),
    ("0,0", None, "import"), ("2", None, "import"), ("GPU-5a1e", None, "import")])
def test_cuda_visible_devices_counts_as_cuda_counts_it(
        tmp_path: Path, visible: str, gpus: int | None, how: str) -> None:
    torch = {"version": "2.11.0+cu130", "cuda_version": "13.0", "available": True,
             "names": ["NVIDIA H200"]}
    found = _probe(*_host(tmp_path, cuda="13.0", init=ANSWERS), visible=visible, torch=torch)
    assert found["how"] == how
    assert found["gpus"] == (1 if gpus is None else gpus)  # None: torch's own answer
    assert found["cuda"] is (found["gpus"] > 0)


def test_a_driver_older_than_torch_s_cuda_is_left_to_torch(tmp_path: Path) -> None:
    # torch built for CUDA 13.0 on a driver of CUDA 12.8: torch says no CUDA (and warns why)
    torch = {"version": "2.11.0+cu130", "cuda_version": "13.0", "available": False,
             "names": []}
    found = _probe(*_host(tmp_path, cuda="13.0", init=ANSWERS), cuda_driver=12080, torch=torch)
    assert (found["how"], found["cuda"], found["gpus"]) == ("import", False, 0)


def test_a_newer_driver_than_torch_s_cuda_is_told_from_nvml(tmp_path: Path) -> None:
    found = _probe(*_host(tmp_path, cuda="12.8"), cuda_driver=13000)
    assert (found["how"], found["gpus"], found["cuda_version"]) == ("nvml", 2, "12.8")


@pytest.mark.parametrize("case", ["two kinds", "mig", "no uvm node", "no gpu node", "no pynvml",
                                  "amd node"])
def test_what_nvml_cannot_tell_exactly_asks_torch(tmp_path: Path, case: str) -> None:
    gpus = {"two kinds": [H200, T4], "mig": [H200, {**H200, "mig": [1, 1]}]}.get(case)
    nodes = {"no uvm node": ("nvidiactl", "nvidia0", "nvidia1"),
             "no gpu node": ("nvidiactl", "nvidia-uvm", "nvidia0"),
             "amd node": ("nvidiactl", "nvidia-uvm", "nvidia0", "nvidia1", "kfd")}.get(case)
    host = _host(tmp_path, cuda="13.0", init=REFUSES, nvml=case != "no pynvml",
                 **({"nodes": nodes} if nodes else {}))
    found = _probe(*host, gpus=gpus)
    assert found["torch_error"] == "RuntimeError: torch was imported"


def test_a_cpu_build_on_a_gpu_host_sees_no_gpu_without_importing(tmp_path: Path) -> None:
    found = _probe(*_host(tmp_path, cuda=None, nvml=False))
    assert "torch_error" not in found
    assert (found["how"], found["cuda"], found["gpus"]) == ("version.py", False, 0)


def test_a_host_without_gpu_nodes_reads_version_py_only(tmp_path: Path) -> None:
    found = _probe(*_host(tmp_path, cuda="13.0", nodes=()))
    assert "torch_error" not in found and "gpus" not in found
    assert (found["how"], found["torch_full"]) == ("version.py", "2.11.0+cu130")


def test_the_check_says_the_same_whichever_way_the_probe_knew(tmp_path: Path) -> None:
    """The check's cuda and precision facts from an NVML answer equal those from torch's."""
    torch = {"version": "2.11.0+cu130", "cuda_version": "13.0", "available": True,
             "names": ["NVIDIA H200", "NVIDIA H200"]}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    by_nvml = _probe(*_host(tmp_path / "a", cuda="13.0"))
    by_torch = _probe(*_host(tmp_path / "b", cuda="13.0", init=ANSWERS, nvml=False), torch=torch)
    assert (by_nvml["how"], by_torch["how"]) == ("nvml", "import")
    host = HostSection(name="gpubox", address="local", gpus="auto")
    judged = []
    for found in (by_nvml, by_torch):
        facts = HostFacts()
        judge_python(host, json.dumps(found), 0, facts)
        judged.append(([(i.name, i.ok, i.detail) for i in facts.items if i.name != "python"],
                       facts.gpus, facts.gpu_names, facts.bf16))
    assert judged[0] == judged[1]


def test_the_check_keeps_how_long_the_torch_probe_took_and_the_run_logs_it() -> None:
    host = HostSection(name="gpubox", address="local", gpus="auto")
    facts = HostFacts()
    found = {"python": "3.12.3", "executable": "/usr/bin/python3", "torch": "2.11.0",
             "torch_full": "2.11.0+cu130", "cuda": True, "gpus": 1, "cuda_version": "13.0",
             "gpu_names": ["NVIDIA H200"], "bf16": [True], "how": "nvml", "seconds": 0.071}
    judge_python(host, json.dumps(found), 0, facts)
    assert facts.timings == [CheckTiming(host="gpubox", name="torch", seconds=0.071,
                                         how="nvml")]
    line = timing_line("check", 0.5, [CheckTiming(host="gpubox", name="probe", seconds=0.25),
                                      *facts.timings,
                                      CheckTiming(host="*", name="mesh", seconds=0.125)])
    assert line == ("corral: check took 0.50 s: gpubox probe 0.25 s, gpubox torch 0.07 s "
                    "(nvml), * mesh 0.12 s")


def test_a_python_too_old_for_the_probe_still_says_its_version(tmp_path: Path) -> None:
    """Python 3.6 cannot compile the probe: the gate before it answers with the version alone,
    and the check asks for a newer Python (here this interpreter says it is 3.6)."""
    dev, site = _host(tmp_path, cuda="13.0")
    (site / "sitecustomize.py").write_text("import sys\nsys.version_info = (3, 6, 15)\n")
    found = _probe(dev, site)
    assert found["torch_error"] == "not asked: Python older than 3.7"
    assert set(found) == {"python", "executable", "torch_error"}
