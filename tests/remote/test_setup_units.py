"""What ``corral setup`` installs where: the CUDA flavour from the driver, the CPU build
elsewhere (GPU facts are fakes: the driver version nvidia-smi would report), and tcmalloc
where the host's ranks would use it (the package manager and ``id`` are fakes on PATH)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

from remote.config.cluster import HostSection
from remote.hosts.allocator_setup import found_script, install_script, outcome, wants_install
from remote.hosts.setup import EXIT_MARK, _run_logged, cuda_flavour, probe_command, wanted_for
from remote.hosts.transport import LocalTransport


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


SH = shutil.which("sh") or "/bin/sh"
"""The shell, by path: the fake PATH holds only the fakes."""


def _fake_host_tools(tmp_path: Path, uid: int) -> Path:
    """A PATH with a fake ``id`` (user ``uid``) and a fake ``apt-get`` that logs its
    arguments and, like a fresh host without package lists, installs only after ``update``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = {
        "id": f"#!/bin/sh\necho {uid}\n",
        "apt-get": f"#!/bin/sh\necho \"$*\" >> '{tmp_path}/apt.log'\n"
                   f"case \"$1\" in update) : > '{tmp_path}/lists';; "
                   f"install) [ -e '{tmp_path}/lists' ];; esac\n",
    }
    for name, text in tools.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "env").symlink_to(shutil.which("env") or "/usr/bin/env")
    return bin_dir


def _install(host: HostSection, tmp_path: Path, bin_dir: Path, libraries: list[str]) -> str:
    done = subprocess.run([SH, "-c", install_script(host, libraries)], capture_output=True,
                          text=True, env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
                          timeout=60)
    assert done.returncode == 0, done.stderr  # never fails the set-up
    return outcome(done.stdout)


def test_setup_installs_tcmalloc_as_root_with_the_hosts_package_manager(tmp_path: Path) -> None:
    host = HostSection(name="c", address="c")  # allocator = "auto"
    line = _install(host, tmp_path, _fake_host_tools(tmp_path, 0), [str(tmp_path / "none.so")])
    assert line == "allocator: tcmalloc installed with apt-get"
    assert (tmp_path / "apt.log").read_text().splitlines() == [
        "install -y -q libtcmalloc-minimal4", "update -q", "install -y -q libtcmalloc-minimal4"]


def test_setup_without_root_says_how_and_installs_nothing(tmp_path: Path) -> None:
    host = HostSection(name="c", address="c", allocator="tcmalloc")
    line = _install(host, tmp_path, _fake_host_tools(tmp_path, 1000), [str(tmp_path / "x.so")])
    assert line.startswith("allocator: no tcmalloc; installing it needs root")
    assert "apt-get install libtcmalloc-minimal4" in line
    assert not (tmp_path / "apt.log").exists()


def test_setup_leaves_a_host_with_an_allocator_or_that_wants_none_alone(tmp_path: Path) -> None:
    present = tmp_path / "libtcmalloc_minimal.so.4"
    present.write_bytes(b"")
    host = HostSection(name="c", address="c")
    line = _install(host, tmp_path, _fake_host_tools(tmp_path, 0), [str(present)])
    assert line == f"allocator: {present} is there" and not (tmp_path / "apt.log").exists()
    found = subprocess.run(["sh", "-c", found_script(host, [str(tmp_path / "no.so"),
                                                            str(present)])],
                           capture_output=True, text=True, timeout=60).stdout
    assert found.strip() == str(present) and not wants_install(host, found)
    assert wants_install(host, "")
    for setting in ("glibc", "off", "jemalloc"):
        assert not wants_install(HostSection(name="c", address="c", allocator=setting), "")


# -- progress while a step runs ----------------------------------------------------------------

def test_a_steps_output_is_shown_per_host_while_it_runs_and_logged(tmp_path: Path) -> None:
    """pip takes minutes: each output line reaches the progress callback as it is printed
    (the step below waits for a file the callback creates on its first line), the step's
    status and output tail come back, and setup.log on the host keeps it all."""
    host = HostSection(name="n1", address="local", workdir=str(tmp_path / "work"))
    go = tmp_path / "go"
    command = (f"echo 'Collecting torch==2.13.0'; echo 'Requirement already satisfied: x'; "
               f"while [ ! -e '{go}' ]; do sleep 0.05; done; echo 'Successfully installed'; "
               "exit 3")
    seen: list[tuple[str, str]] = []

    def progress(name: str, message: str) -> None:
        seen.append((name, message))
        if "Collecting" in message:
            go.touch()  # the step goes on only once its first line was shown

    status, tail = asyncio.run(asyncio.wait_for(
        _run_logged(LocalTransport(host), command, "pip install torch", progress, 60), 60))
    assert status == 3
    assert seen == [("n1", "$ pip install torch"), ("n1", "  Collecting torch==2.13.0"),
                    ("n1", "  Successfully installed")]
    assert "Successfully installed" in tail and EXIT_MARK not in tail
    log = (tmp_path / "work" / "setup.log").read_text()
    assert log.startswith("$ pip install torch\nCollecting torch==2.13.0\n")
    assert "Requirement already satisfied: x" in log


def test_a_step_that_outlives_its_timeout_is_reported(tmp_path: Path) -> None:
    host = HostSection(name="n1", address="local", workdir=str(tmp_path / "work"))
    status, tail = asyncio.run(_run_logged(
        LocalTransport(host), "echo started; sleep 30", "slow", lambda *_: None, 0.5))
    assert status == 124 and "started" in tail
