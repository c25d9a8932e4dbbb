"""The runs (slow tier) of what ``tests/remote/test_stop_local.py`` tests: the stop script on its
own: TERM, grace, KILL, and a pattern that matches one run only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from remote.api import RunEvent, RunStatus
from remote.run.controller import SshRunController
from remote.run.stop import stop_bound

try:
    import runkit
    from test_script_run_local import config as script_config
except ImportError:  # collected as a package
    from tests.remote import runkit  # type: ignore[no-redef]
    from tests.remote.scenarios.test_script_run_local import config as script_config  # type: ignore[no-redef]




HOLDS_THE_GIL = """\
import itertools, os, pathlib, subprocess, sys, time
if os.environ["RANK"] == "1":
    child = subprocess.Popen(["sh", "-c", "trap '' TERM; exec sleep 600"])
    pathlib.Path(sys.argv[1], "child").write_text(str(child.pid))
    pathlib.Path(sys.argv[1], "stuck").touch()
    sum(itertools.repeat(1, 10**15))
time.sleep(600)
"""


STOPS = 3


@pytest.mark.slow  # starts torchrun
@pytest.mark.timeout(900)
async def test_every_stop_ends_a_rank_that_holds_the_gil_and_what_it_started(
        tmp_path: Path) -> None:
    """TERM cannot reach a rank whose main thread holds the GIL: its KILL after the grace
    ends it with its whole process group, within the stated bound, every time."""
    grace_s = 2.0
    for attempt in range(STOPS):
        marks = tmp_path / f"marks-{attempt}"
        marks.mkdir()
        (tmp_path / "stuck.py").write_text(HOLDS_THE_GIL)
        config = script_config(tmp_path / f"run-{attempt}", tmp_path / "stuck.py",
                               [str(marks)], slowdowns=(1.0, 1.0))
        controller = SshRunController(config)
        try:
            handle = await controller.start()
            reading = asyncio.ensure_future(_all(runkit.bounded(handle.events())))
            deadline = time.monotonic() + runkit.RUN_LIMIT_S
            while not (marks / "stuck").exists():
                assert not reading.done() and time.monotonic() < deadline, attempt
                await asyncio.sleep(0.05)
            began = time.monotonic()
            report = await handle.stop(grace_s=grace_s)
            took = time.monotonic() - began
            events = await reading
        finally:
            await controller.aclose()
        assert report.clean, (attempt, report)
        assert took < stop_bound(grace_s) + SETTLE_S, (attempt, took)
        final = events[-1]
        assert isinstance(final, RunStatus) and final.state == "stopped", (attempt, final)
        assert runkit.run_processes(handle.run_id) == [], attempt
        assert not runkit.alive(int((marks / "child").read_text())), attempt


SETTLE_S = 30.0


async def _all(events: AsyncIterator[RunEvent]) -> list[RunEvent]:
    return [event async for event in events]
