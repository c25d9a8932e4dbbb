"""A local command corral gives up on is KILLed and seen to end before its task does, however
many cancels arrive meanwhile: one left unseen outlived the event loop, and ``corral run``
printed "Exception ignored ... Event loop is closed" as it exited after a completed run (a
tail still closing when the runner's teardown cancelled every task, its waits included)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import remote.hosts.transport as transport
from remote.config.cluster import HostSection
from remote.hosts.transport import LocalTransport, killed_and_reaped


async def _cancel_often(task: asyncio.Task[Any], times: int = 4) -> None:
    """Cancel ``task`` again and again, and every other task too, as corral's exit does
    (``console/runner.py``: the waits inside the task included)."""
    for _ in range(times):
        for other in asyncio.all_tasks():
            if other is not asyncio.current_task():
                other.cancel()
        for _ in range(3):
            await asyncio.sleep(0)


async def test_a_killed_command_is_reaped_whatever_cancels_come() -> None:
    proc = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)
    task = asyncio.create_task(killed_and_reaped(proc))
    await asyncio.sleep(0)  # it has KILLed and waits
    await _cancel_often(task)
    with pytest.raises(asyncio.CancelledError):
        await task  # the cancel is not lost: raised once the process was seen to end
    assert proc.returncode == -9


async def test_a_tail_cancelled_again_and_again_leaves_no_process_unseen(
        monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[asyncio.subprocess.Process] = []
    real = asyncio.create_subprocess_exec

    async def recorded(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        started.append(await real(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(transport.asyncio, "create_subprocess_exec", recorded)
    lines: list[str] = []

    async def tail() -> None:  # a command that ignores the end of its input and TERM
        host = HostSection(name="h", address="local")
        async for line in LocalTransport(host).stream(
                "trap '' TERM; echo ready; while :; do sleep 0.05; done"):
            lines.append(line)

    task = asyncio.create_task(tail())
    deadline = asyncio.get_running_loop().time() + 30
    while not lines and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert lines == ["ready"]
    await _cancel_often(task)
    await asyncio.gather(task, return_exceptions=True)
    assert [p.returncode for p in started] == [-9]  # seen to end before the task did
