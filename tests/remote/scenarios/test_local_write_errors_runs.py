"""The runs (slow tier) of what ``tests/remote/test_local_write_errors.py`` tests: this machine
failing to write a run's records ends the run as a full disk does (issue 59, item 2): the hosts
stopped, one sentence naming this machine's path; never a traceback, never a host called
unreachable for a local error, never ranks left training unfollowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from remote.api import HostStatus, RunStatus
from remote.run.controller import SshRunController

try:
    import runkit
except ImportError:  # collected as a package
    from tests.remote import runkit  # type: ignore[no-redef]
from tests.remote.test_local_write_errors import _unwritable


@pytest.mark.slow  # starts torchrun
async def test_the_copy_vanishing_mid_run_stops_the_hosts_and_names_this_machine(
        tmp_path: Path) -> None:
    config = runkit.local_cluster(tmp_path, ("h",), runkit.tiny_run(steps=1_000_000))
    controller = SshRunController(config)
    try:
        handle = await controller.start()
        events = runkit.bounded(handle.events())
        await runkit.until_first_step(events)
        # The local host's run directory is this machine's too: only the copy goes.
        _unwritable(tmp_path / "runs" / handle.run_id / "collected")
        rest = [e async for e in events]
    finally:
        await controller.aclose()
    final = rest[-1]
    assert isinstance(final, RunStatus) and final.state == "failed", final
    assert final.detail.startswith("this machine could not write the run's records at "
                                   f"{tmp_path / 'runs' / handle.run_id / 'collected'}")
    assert not any(isinstance(e, HostStatus) and e.state == "unreachable" for e in rest)
    assert runkit.run_processes(handle.run_id) == []  # the host's ranks were stopped
