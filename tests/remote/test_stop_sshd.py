"""``stop``: TERM, grace, KILL, and nothing of the run left on any host."""

from __future__ import annotations

import asyncio

import pytest

from remote.api import RankEvent, RunEvent, RunStatus
from remote.run.controller import SshRunController
from trainer.events import StepEvent

try:
    from runkit import bounded, run_processes, tiny_run
except ImportError:  # collected as a package
    from tests.remote.runkit import bounded, run_processes, tiny_run  # type: ignore[no-redef]

pytestmark = [pytest.mark.sshd, pytest.mark.slow]


async def test_stop_from_another_controller_leaves_no_process(sshd_cluster) -> None:
    cluster = sshd_cluster(2)
    config = cluster.config(run=tiny_run(steps=100000))
    follower = SshRunController(config)
    stopper = SshRunController(config)  # as `corral stop RUN` would, from another process
    events: list[RunEvent] = []
    stepping = asyncio.Event()
    try:
        handle = await follower.start()

        async def follow() -> None:
            async for event in bounded(handle.events()):
                events.append(event)
                if isinstance(event, RankEvent) and isinstance(event.event, StepEvent):
                    stepping.set()

        following = asyncio.create_task(follow())
        await asyncio.wait_for(stepping.wait(), 180)
        assert len(run_processes(handle.run_id)) >= 4  # 2 launchers + 2 ranks at least
        report = await (await stopper.attach(handle.run_id)).stop(grace_s=10)
        assert report.clean, report
        assert report.remaining == {"h0": 0, "h1": 0}
        assert run_processes(handle.run_id) == []
        await asyncio.wait_for(following, 60)
    finally:
        await follower.aclose()
        await stopper.aclose()
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "stopped", final


async def test_stop_on_the_handle_ends_the_stream_as_stopped(sshd_cluster) -> None:
    cluster = sshd_cluster(1)
    config = cluster.config(run=tiny_run(steps=100000))
    controller = SshRunController(config)
    events: list[RunEvent] = []
    try:
        handle = await controller.start()
        async for event in bounded(handle.events()):
            events.append(event)
            if isinstance(event, RankEvent) and isinstance(event.event, StepEvent):
                report = await handle.stop(grace_s=5)
                assert report.clean, report
    finally:
        await controller.aclose()
    assert isinstance(events[-1], RunStatus) and events[-1].state == "stopped", events[-1]
    assert run_processes(handle.run_id) == []
