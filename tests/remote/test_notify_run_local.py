"""``[notify]`` on a real run: two local hosts run a script whose rank 1 raises; the loopback
receiver gets exactly one "failed" notice naming the host, the rank and the error line, within
5 s of the failed status."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from remote.config.exports import NotifySection
from remote.events import RunStatus
from remote.run.controller import SshRunController

try:
    from runkit import bounded, run_processes
    from test_notify import Receiver
    from test_script_run_local import config
except ImportError:  # collected as a package
    from tests.remote.runkit import bounded, run_processes  # type: ignore[no-redef]
    from tests.remote.test_notify import Receiver  # type: ignore[no-redef]
    from tests.remote.test_script_run_local import config  # type: ignore[no-redef]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCRIPT = """\
import os, time
if os.environ["RANK"] == "1":
    raise RuntimeError("notify-test: rank one gives up")
time.sleep(120)
"""


async def test_a_failed_run_sends_one_failed_notice(tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        script = tmp_path / "fail.py"
        script.write_text(SCRIPT)
        cfg = replace(config(tmp_path, script, [], slowdowns=(1.0, 1.0)),
                      notify=NotifySection(urls=(receiver.url,)))
        controller = SshRunController(cfg)
        failed_at = None
        try:
            handle = await controller.start()
            async for event in bounded(handle.events()):
                if isinstance(event, RunStatus) and event.state == "failed":
                    failed_at = time.monotonic()
                    final = event
        finally:
            await controller.aclose()
        assert failed_at is not None
        assert final.failed_host == "h1" and final.failed_rank == 1, final
        receiver.wait_for(1, within_s=5.0 - (time.monotonic() - failed_at))
        (body,) = receiver.bodies
        assert "h1" in body["title"] and "rank 1" in body["title"], body
        assert "notify-test: rank one gives up" in body["message"], body
        assert run_processes(handle.run_id) == []
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
