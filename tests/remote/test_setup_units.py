"""What ``corral setup`` installs where: the CUDA flavour from the driver, the CPU build
elsewhere (GPU facts are fakes: the driver version nvidia-smi would report)."""

from __future__ import annotations

import subprocess

from remote.config.cluster import HostSection
from remote.hosts.setup import cuda_flavour, probe_command, wanted_for


def test_the_driver_version_picks_the_cuda_flavour() -> None:
    assert cuda_flavour("580.65.06") == "cu130"
    assert cuda_flavour("550.54.15") == "cu126"
    assert cuda_flavour("470.256.02") == "cu118"
    assert cuda_flavour("390.1") is None and cuda_flavour("") is None


def test_gpu_hosts_get_the_cuda_build_and_the_others_the_cpu_build() -> None:
    gpu = HostSection(name="g", address="g")
    wanted = wanted_for(gpu, "2.13.0", "550.54.15\n")
    assert wanted.torch == "2.13.0+cu126"
    assert wanted.index == "https://download.pytorch.org/whl/cu126"
    assert "nvidia-ml-py" in wanted.packages
    cpu = wanted_for(HostSection(name="c", address="c"), "2.13.0", "")
    assert (cpu.torch, cpu.index) == ("2.13.0+cpu", "https://download.pytorch.org/whl/cpu")
    # gpus = 0 means the CPU even where a driver is installed.
    declared_cpu = wanted_for(HostSection(name="d", address="d", gpus=0), "2.13.0", "550.1")
    assert declared_cpu.torch == "2.13.0+cpu"
    own_index = wanted_for(HostSection(name="o", address="o", torch_index=""), "2.13.0", "")
    assert own_index.index == ""


def test_the_probe_is_one_quoted_shell_command(tmp_path) -> None:
    host = HostSection(name="w", address="local", workdir=str(tmp_path / "a b; touch x"))
    done = subprocess.run(["sh", "-c", probe_command(host)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and "True" in done.stdout
    assert not (tmp_path / "x").exists()


def test_the_runs_task_packages_are_installed_too() -> None:
    wanted = wanted_for(HostSection(name="c", address="c"), "2.13.0", "",
                        ("transformers>=4.40", "peft>=0.17"))
    assert wanted.packages[-2:] == ("transformers>=4.40", "peft>=0.17")
