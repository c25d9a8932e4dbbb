"""Helpers shared by the run, stop and attach tests (not a test module)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator

from remote.api import RunEvent
from remote.config.cluster import RunSection
from remote.run.stop import run_pattern

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
