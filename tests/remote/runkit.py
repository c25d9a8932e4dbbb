"""Helpers shared by the run, stop and attach tests (not a test module)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from remote.api import RunEvent
from remote.config.cluster import HostSection, RunSection
from remote.hosts.transport import LocalTransport
from remote.run.stop import run_pattern
from remote.run.stream import CollectedCopy, TailItem, tail_host

RUN_LIMIT_S = 240.0
"""No test run may take longer than this."""


def tiny_run(steps: int) -> RunSection:
    """A run small enough for tests: simple_cnn on a few synthetic samples."""
    return RunSection(samples=64, global_batch=8, steps=steps, checkpoint_every=1000,
                      rebalance_every=5, lr=0.01)


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
