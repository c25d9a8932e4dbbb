"""Whole runs over real sshd daemons that fail: a rank killed with SIGKILL, a host dropped (one
failure a run, each its own). A two-host run trained to the end, its final weights fetched
back, is tests/remote/scenarios/test_attach_sshd.py's run, launched once for that and for
``attach``."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

try:
    from runkit import bounded, run_processes, tiny_run
except ImportError:  # collected as a package
    from tests.remote.runkit import (  # type: ignore[no-redef]
        bounded,
        run_processes,
        tiny_run,
    )

from remote.api import RankEvent, RunStatus
from remote.run.controller import SshRunController
from trainer.events import StartEvent, StepEvent

pytestmark = [pytest.mark.sshd, pytest.mark.slow]


async def test_a_killed_rank_ends_the_run_naming_it_and_leaves_nothing(sshd_cluster) -> None:
    # max_restarts = 0, the default: without restarts a killed rank fails the run (with one,
    # the same kill is restarted from a checkpoint: test_recovery_sshd.py).
    cluster = sshd_cluster(2)
    config = cluster.config(run=tiny_run(steps=100000))
    assert config.run.max_restarts == 0
    controller = SshRunController(config)
    killed: tuple[str, int] | None = None
    events = []
    try:
        handle = await controller.start()
        pids: dict[int, tuple[str, int]] = {}
        async for event in bounded(handle.events()):
            events.append(event)
            if isinstance(event, RankEvent) and isinstance(event.event, StartEvent):
                pids[event.event.rank] = (event.host, event.event.pid)
            if (killed is None and isinstance(event, RankEvent)
                    and isinstance(event.event, StepEvent) and event.event.step >= 2
                    and 1 in pids):
                killed = pids[1]
                os.kill(killed[1], signal.SIGKILL)
    finally:
        await controller.aclose()
    assert killed is not None
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "failed", final
    assert (final.failed_host, final.failed_rank) == (killed[0], 1), final
    assert "signal 9" in final.detail
    assert run_processes(handle.run_id) == []



async def test_a_dropped_host_fails_the_run_and_is_cleaned_up(sshd_cluster) -> None:
    cluster = sshd_cluster(2)
    # lost_after = 0: a dropped connection counts as a lost host at once (the default waits
    # and reconnects: tests/remote/scenarios/test_reliability_sshd.py).
    config = cluster.config(run=tiny_run(steps=100000), ssh=cluster.ssh_section(lost_after=0))
    controller = SshRunController(config)
    events = []
    dropped = False
    try:
        handle = await controller.start()
        async for event in bounded(handle.events()):
            events.append(event)
            if (not dropped and isinstance(event, RankEvent)
                    and isinstance(event.event, StepEvent) and event.event.step >= 2):
                dropped = True
                # Kill h1's SSH connections on the server side: the link to h1 is gone.
                subprocess.run(["pkill", "-KILL", "-P", str(cluster.hosts[1].proc.pid)],
                               check=True)
    finally:
        await controller.aclose()
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "failed", final
    assert final.failed_host == "h1" and "lost" in final.detail
    # h1 answers again, so the follower's stop reached it too: nothing is left anywhere.
    assert run_processes(handle.run_id) == []
