"""A host in a real podman container (rootfs mode: this machine's root as an overlay, so the
venv and torch are there): the run, its stop, a restart after a killed rank, and the check's
errors. Real engine: podman (run as this user) with runc; docker is exercised only through
the command builder (tests/remote/test_containers.py), its daemon does not run here."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from remote.api import RankEvent, RunEvent, RunStatus
from remote.config.cluster import ClusterConfig, ClusterSection, ContainerSection, HostSection
from remote.hosts.container import RUN_LABEL, container_name
from remote.run.controller import SshRunController
from trainer.events import CheckpointEvent, StartEvent, StepEvent

try:
    from runkit import RUN_LIMIT_S, alive, bounded, run_processes, tiny_run, until_first_step
except ImportError:  # collected as a package
    from tests.remote.runkit import (  # type: ignore[no-redef]
        RUN_LIMIT_S,
        alive,
        bounded,
        run_processes,
        tiny_run,
        until_first_step,
    )
try:
    from runkit import one_process_flags
except ImportError:  # collected as a package
    from tests.remote.runkit import one_process_flags  # type: ignore[no-redef]
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "trainer"))  # its helpers
from trainer_runs import check, launch

pytestmark = pytest.mark.slow

STEPS = 60
CONF = "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\n"
"""What podman needs on these machines: crun cannot set the open-files limit here, runc can
(/work/shared/notes/containers.md; scripts/test.sh writes the same file)."""
STOP_WITHIN_S = 30.0
"""What a stop may take beyond its grace on this busy machine (the KILL's wait, the engine's
listing and removal): seconds, not the minutes of issue 59's hung start."""
CLUSTER = "boxed"
"""The tests' cluster name: the run ids, and so the container names, begin with it."""


@pytest.fixture
def podman(tmp_path: Path) -> dict[str, str]:
    """The host ``env`` that lets podman run here (``CONTAINERS_CONF``); skips without it."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/test.sh installs it as root on Debian)")
    conf = tmp_path / "containers.conf"
    conf.write_text(CONF if shutil.which("runc") else CONF.split("[engine]")[0])
    env = {"CONTAINERS_CONF": str(conf)}
    _remove_leftovers(env)
    tried = subprocess.run(["podman", "run", "--rm", "--network", "host", "--rootfs", "/:O",
                            "/bin/true"], env={**os.environ, **env}, capture_output=True,
                           text=True, timeout=120)
    if tried.returncode != 0:
        pytest.skip(f"podman cannot start a container here: {tried.stderr.strip()[-200:]}")
    return env


def _remove_leftovers(env: dict[str, str]) -> None:
    """Remove the containers an interrupted earlier session of these tests left behind (their
    cluster, ``boxed``, is these tests' alone). The pre-flight check rightly refuses a host
    that holds another run's container, so one leftover would fail every test here."""
    prefix = container_name(CLUSTER, "")  # every run id of the cluster begins so
    listed = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"],
                            env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=60)
    leftovers = [name for name in listed.stdout.split() if name.startswith(prefix)]
    if leftovers:
        subprocess.run(["podman", "rm", "-f", "-t", "0", *leftovers],
                       env={**os.environ, **env}, capture_output=True, timeout=120)


def _cluster(root: Path, env: dict[str, str], *, boxed: bool, count: int = 3,
             slowdown: float = 1.0, **run: object) -> ClusterConfig:
    """h0, h1 (and h2 when ``count`` is 3) on this machine; with ``boxed``, h1 runs in a
    podman container. Two hosts, the container's and a bare one, are enough for what a run
    shows here (the container host's rank beside a bare one's): each host more is one launch
    more, and another on every restart. A ``slowdown`` makes the ranks of a run the test
    stops sleep through most of each step instead of computing."""
    box = ContainerSection(rootfs="/", engine="podman") if boxed else None
    hosts = tuple(HostSection(name=f"h{i}", address="local", python=sys.executable,
                              workdir=str(root / "work"), gpus=0, nproc=1, threads=1,
                              slowdown=slowdown, env=env if i == 1 else {},
                              container=box if i == 1 else None)
                  for i in range(count))
    settings = replace(tiny_run(steps=STEPS), checkpoint_every=10, policy="static",
                       split=(3, 3, 2) if count == 3 else (4, 4),
                       **run)  # type: ignore[arg-type]
    return ClusterConfig(path=root / "cluster.toml",
                         cluster=ClusterSection(name=CLUSTER, run_root=str(root / "runs")),
                         hosts=hosts, run=settings)


def _containers(env: dict[str, str], run_id: str) -> list[str]:
    out = subprocess.run(["podman", "ps", "-a", "-q", "--filter", f"label={RUN_LABEL}={run_id}"],
                         env={**os.environ, **env}, capture_output=True, text=True)
    return out.stdout.split()


def _params(run_dir: Path) -> dict[str, torch.Tensor]:
    newest = sorted((run_dir / "checkpoints").glob("*.pt"))[-1]
    assert newest.name == f"step-{STEPS:08d}.pt"
    return dict(torch.load(newest, map_location="cpu", weights_only=False)["model"])


async def _run(config: ClusterConfig, env: dict[str, str], *, kill_h1: bool = False
               ) -> tuple[str, list[RunEvent]]:
    """Run to the end; with ``kill_h1``, KILL h1's rank inside its container once a
    checkpoint exists (its pid is the container's own, so the kill goes through the engine)."""
    controller = SshRunController(config)
    events: list[RunEvent] = []
    pid: int | None = None
    checkpointed = killed = False
    try:
        handle = await controller.start()
        async for event in bounded(handle.events()):
            events.append(event)
            inner = event.event if isinstance(event, RankEvent) else None
            if isinstance(inner, StartEvent) and event.host == "h1":  # type: ignore[union-attr]
                pid = inner.pid
            checkpointed |= isinstance(inner, CheckpointEvent)
            if kill_h1 and not killed and checkpointed and isinstance(inner, StepEvent) and pid:
                killed = True
                subprocess.run(["podman", "exec", container_name(handle.run_id, "h1"), "kill",
                                f"-{int(signal.SIGKILL)}", str(pid)],
                               env={**os.environ, **env}, check=True, timeout=60)
    finally:
        await controller.aclose()
    assert not kill_h1 or killed
    return handle.run_id, events


def _worst(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)).item()
               for k in a)


async def test_a_container_host_trains_like_a_bare_one_and_resumes_a_killed_rank(
    tmp_path: Path, podman: dict[str, str]
) -> None:
    # One run with h1 in a container, its rank killed there after a checkpoint: it restarts
    # and ends with the parameters of one process on this machine, as a bare host's run does
    # (the first attempt trained in the container too).
    boxed = _cluster(tmp_path / "boxed", podman, boxed=True, count=2, max_restarts=1)
    killed_id, killed_events = await _run(boxed, podman, kill_h1=True)
    assert isinstance(killed_events[-1], RunStatus), killed_events[-1]
    assert killed_events[-1].state == "completed", killed_events[-1]
    restarted = [e for e in killed_events if isinstance(e, RunStatus)
                 and e.state == "launching" and "restart 1" in e.detail]
    assert restarted
    check(launch(1, *one_process_flags(boxed.run), "--run-dir", str(tmp_path / "alone")))
    reference = _params(tmp_path / "alone")
    assert _worst(reference, _params(Path(boxed.cluster.run_root) / killed_id)) <= 1e-5
    assert _containers(podman, killed_id) == [] and run_processes(killed_id) == []


async def test_stop_mid_run_leaves_no_container_and_no_process(
    tmp_path: Path, podman: dict[str, str]
) -> None:
    config = _cluster(tmp_path, podman, boxed=True, count=2, slowdown=10.0, steps=100000)
    controller = SshRunController(config)
    try:
        handle = await controller.start()
        await until_first_step(handle.events())
        assert _containers(podman, handle.run_id)  # the launcher's container runs
        report = await handle.stop(grace_s=20)
    finally:
        await controller.aclose()
    assert report.clean, report
    assert _containers(podman, handle.run_id) == []
    assert run_processes(handle.run_id) == []


HUNG_START = """#!/bin/sh
# podman, but the start of a run's launcher container hangs in a helper of the engine's
# client (a slow image start): a process with no run id on its command line.
case " $* " in *" --name "*) sleep 3600 & echo $! > {pid}; wait; exit 1;; esac
exec {podman} "$@"
"""


async def test_a_stop_during_a_hung_container_start_kills_it_within_the_grace(
    tmp_path: Path, podman: dict[str, str]
) -> None:
    """Issue 59: a stop while h1's container start hangs ends within its grace, KILLs the
    hung start and says "nothing left" only once nothing is."""
    bin_dir, hung = tmp_path / "bin", tmp_path / "hung.pid"
    bin_dir.mkdir()
    (bin_dir / "podman").write_text(HUNG_START.format(pid=hung, podman=shutil.which("podman")))
    (bin_dir / "podman").chmod(0o755)
    env = {**podman, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    config = _cluster(tmp_path, env, boxed=True, count=2, steps=100000)
    controller = SshRunController(config)
    grace_s = 3.0
    pid = 0
    follow: asyncio.Task[None] | None = None
    try:
        handle = await controller.start()
        # Reading the events drives the check, push and launch.
        follow = asyncio.create_task(until_first_step(handle.events()))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RUN_LIMIT_S
        while not (hung.exists() and hung.read_text().strip()):
            assert loop.time() < deadline, "the launcher's container start never began"
            assert not follow.done(), follow
            await asyncio.sleep(0.1)
        pid = int(hung.read_text())
        assert alive(pid)
        began = loop.time()
        report = await handle.stop(grace_s=grace_s)
        took = loop.time() - began
    finally:
        if follow is not None:
            follow.cancel()
        await controller.aclose()
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert not alive(pid), "the hung start outlived the stop"
    assert report.clean, report
    # The grace, the KILL's wait and the engine's listing: never minutes.
    assert took < grace_s + STOP_WITHIN_S, took
    assert _containers(podman, handle.run_id) == [] and run_processes(handle.run_id) == []


def _path_without_engines(root: Path) -> str:
    """A PATH holding every command of /usr/bin but podman and docker."""
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for tool in Path("/usr/bin").iterdir():
        if tool.name not in ("podman", "docker"):
            (bin_dir / tool.name).symlink_to(tool)
    return f"{bin_dir}:/usr/sbin:/sbin"


async def test_check_names_a_rootfs_without_torch_and_a_missing_engine(
    tmp_path: Path, podman: dict[str, str]
) -> None:
    found = subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True)
    if found.returncode == 0:
        pytest.skip("/usr/bin/python3 has torch here: no rootfs without torch to show")
    config = _cluster(tmp_path, podman, boxed=True)
    no_torch = replace(config.hosts[1], python=None,
                       container=ContainerSection(rootfs="/", engine="podman",
                                                  python="/usr/bin/python3"))
    # a machine with neither engine: the same host, its PATH without them
    no_engine = replace(config.hosts[2], env={"PATH": _path_without_engines(tmp_path)},
                        container=ContainerSection(image="img:1"))
    config = replace(config, hosts=(config.hosts[0], no_torch, no_engine))
    controller = SshRunController(config)
    try:
        report = await controller.check()
    finally:
        await controller.aclose()
    failed = {(i.host, i.name): i for i in report.items if not i.ok}
    assert "has no torch" in failed[("h1", "torch")].hint
    assert failed[("h2", "engine")].detail == "podman (or docker) not found on h2"
    assert "install podman (or docker) on h2" in failed[("h2", "engine")].hint
    assert ("h2", "python") not in failed  # the engine's item alone names the cause
