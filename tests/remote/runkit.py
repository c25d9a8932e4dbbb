"""Helpers shared by the run, stop and attach tests (not a test module)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

from remote.api import RankEvent, RunEvent
from remote.checks.plan import HostPlan
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.hosts.transport import LocalTransport
from remote.records.collected import CollectedCopy
from remote.run.controller import SshRunController
from remote.run.launch import LaunchPlan, launch_host
from remote.run.stop import run_pattern, stop_host
from remote.run.stream import TailItem, tail_host
from trainer.events import StepEvent
from trainer.settings.flags import flag_words
from trainer.settings.run_settings import RunSettings
from trainer.settings.train_config import TrainConfig

RUN_LIMIT_S = 240.0
"""No test run may take longer than this."""


@contextlib.contextmanager
def stand_in_rank(run_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process standing for a rank of the run in ``run_dir``: its command line names the run
    directory, as a real rank's does, so the run's process count finds it. Killed on exit."""
    rank = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()",
                             "--run-dir", str(run_dir)], stdin=subprocess.PIPE)
    try:
        yield rank
    finally:
        rank.kill()
        rank.wait()


def tiny_run(steps: int) -> RunSection:
    """A run small enough for tests: simple_cnn on a few synthetic samples."""
    return RunSection(samples=64, global_batch=8, steps=steps, checkpoint_every=1000,
                      rebalance_every=5, lr=0.01)


def one_process_flags(run: RunSection) -> list[str]:
    """``python -m trainer`` flags for ``run`` with no balancer and no split given (the
    trainer's equal split): as one process, the reference whose parameters any split of
    ``run`` must give; on several local ranks, a static run's numbers without its hosts."""
    values = {f.name: getattr(run, f.name) for f in fields(RunSettings)}
    values.update(split=None, policy="static")
    return flag_words(values, TrainConfig)


def local_cluster(tmp_path: Path, names: tuple[str, ...], run: RunSection) -> ClusterConfig:
    """A cluster of ``local`` hosts named ``names`` (the first is the master), one rank and one
    thread each, under ``tmp_path``, its rendezvous on a port free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    hosts = tuple(HostSection(name=name, address="local", python=sys.executable,
                              workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1)
                  for name in names)
    return ClusterConfig(path=tmp_path / "cluster.toml", hosts=hosts, run=run,
                         cluster=ClusterSection(name="local", master=names[0],
                                                run_root=str(tmp_path / "runs"),
                                                rendezvous_port=port))


def alive(pid: int) -> bool:
    """Whether ``pid`` is still a process (not gone, not a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_processes(run_id: str) -> list[str]:
    """Command lines of this machine's processes that belong to run ``run_id``."""
    out = subprocess.run(["pgrep", "-af", run_pattern(run_id)], capture_output=True, text=True)
    return out.stdout.splitlines()


async def bounded(events: AsyncIterator[RunEvent]) -> AsyncIterator[RunEvent]:
    """The stream, failing the test if it does not end within ``RUN_LIMIT_S``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RUN_LIMIT_S
    while True:
        try:
            event = await asyncio.wait_for(anext(events), deadline - loop.time())
        except StopAsyncIteration:
            return
        yield event


async def run_to_end(config: ClusterConfig) -> tuple[str, list[RunEvent]]:
    """Start a run of ``config`` and read its events to the end: its id and every event."""
    controller = SshRunController(config)
    try:
        handle = await controller.start()
        events = [e async for e in bounded(handle.events())]
    finally:
        await controller.aclose()
    assert_nothing_left_pending()
    return handle.run_id, events


def assert_nothing_left_pending() -> None:
    """Once a run's events ended and its controller closed, no task of corral's is still
    pending: one left for the event loop's end was "Task was destroyed but it is pending!" as
    the program exited (the merged tails' readers, their generator never closed)."""
    current = asyncio.current_task()
    left = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    assert not left, f"tasks still pending after the run: {left}"


async def until_first_step(events: AsyncIterator[RunEvent]) -> None:
    """Read ``events`` (within ``RUN_LIMIT_S``) up to the first step event of any rank."""
    async for event in bounded(events):
        if isinstance(event, RankEvent) and isinstance(event.event, StepEvent):
            break


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...)."""
    found: list[int] = []
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    for child in (int(p) for p in children.split()):
        found += [child, *descendants(child)]
    return found


async def launch_local_until_exit(config: ClusterConfig, plan: LaunchPlan,
                                  place: HostPlan) -> None:
    """Launch ``place`` (a ``local`` host) as corral does, wait for its launcher's exit file,
    then stop it."""
    transport = LocalTransport(place.host)
    await launch_host(transport, config, plan, place)
    exit_file = Path(plan.run_dir) / "hosts" / f"{place.host.name}.exit"
    deadline = time.monotonic() + 30
    while not exit_file.exists():
        assert time.monotonic() < deadline, "the fake launcher never finished"
        await asyncio.sleep(0.05)
    await stop_host(transport, plan.run_dir, plan.run_id, grace_s=0.5)


async def tail_local_host(run_dir: Path, local_dir: Path, workdir: Path,
                          name: str = "h") -> list[TailItem]:
    """Every item the tailer reports for ``local`` host ``name`` whose run directory is
    ``run_dir`` (until its launcher's exit file), copied to ``local_dir``."""
    host = HostSection(name=name, address="local", python=sys.executable, workdir=str(workdir))
    copy = CollectedCopy(local_dir, name)
    items: list[TailItem] = []
    try:
        async for item in tail_host(LocalTransport(host), str(run_dir), copy):
            items.append(item)
    finally:
        copy.close()
    return items


def cut_ssh(daemon: Any) -> None:
    """Kill an sshd's listener and every session of it (by the PIDs found): the host's
    processes started over SSH go on, its connections are gone."""
    sessions = descendants(daemon.proc.pid)
    daemon.proc.kill()
    daemon.proc.wait()
    for pid in sessions:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
