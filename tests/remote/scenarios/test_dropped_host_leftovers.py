"""A host dropped with ``on_host_loss = "continue"`` stays in the run's record: ``status``
reports what the run left there and ``stop`` ends it. Each sshd host runs in its own PID
namespace, so a process on the dropped host is invisible from the host still in the run."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

try:
    from conftest import SshdCluster
except ImportError:  # collected as a package module
    from tests.remote.conftest import SshdCluster  # type: ignore[no-redef]

from remote.hosts.pool import HostPool
from remote.records.runs import RunInfo, read_run_info, run_dir_for, write_run_info
from remote.run.controller import SshRunController
from remote.run.record import RunRecord
from remote.run.refresh import refresh_runs
from remote.run.stop import count_run_processes

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

OWN_PIDS = ["unshare", "-p", "-f", "--kill-child", "--mount-proc"]
"""Each host its own PID namespace; --kill-child: the fixture's TERM to unshare also ends the
host's sshd (PID 1 of the namespace) and so everything in it."""


async def _leftover(pool: HostPool, host: str, run_dir: str) -> int:
    """Start a process of the run on ``host`` (its command line carries the run directory, as
    a rank's does) and return how many the host counts."""
    transport = await pool.get(host)
    words = shlex.join([sys.executable, "-c", "import time; time.sleep(600)", "--run-dir",
                        run_dir])
    await transport.run(f"setsid {words} </dev/null >/dev/null 2>&1 &", check=True)
    run_id = run_dir.rsplit("/", 1)[1]
    deadline = time.monotonic() + 10
    while (count := await count_run_processes(transport, run_id)) == 0:
        assert time.monotonic() < deadline, "the leftover never started"
    return count


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_a_dropped_host_is_still_seen_by_status_and_ended_by_stop(
        sshd_cluster: Callable[..., SshdCluster]) -> None:
    cluster = sshd_cluster(2, prefix=lambda i: OWN_PIDS)
    base = cluster.config(name="d")
    config = replace(base, run=replace(base.run, on_host_loss="continue"))
    run_id = "d-20261122-000000-abcdef"
    run_dir = run_dir_for(config, run_id)

    async def go() -> tuple[RunInfo, RunInfo, int, int]:
        controller = SshRunController(config)
        try:
            info = RunInfo(run_id=run_id, cluster="d", state="running", started=1.0,
                           hosts=("h0", "h1"))
            write_run_info(config, info)
            assert await _leftover(controller.pool, "h1", run_dir) == 1
            assert await count_run_processes(await controller.pool.get("h0"), run_id) == 0
            # The run went on without h1 as the loop records it (``decide``'s ``DropHosts``,
            # tests/remote/test_decide.py): the hosts left, and h1 as a suspect host.
            RunRecord(config, info).change(hosts=("h0",), suspect_hosts=("h1",))
            after_drop = read_run_info(config, run_id)
            status = next(r for r in await refresh_runs(config, controller.pool)
                          if r.run_id == run_id)
            attached = await controller.attach(run_id)
            await attached.stop(grace_s=1.0)
            left = await count_run_processes(await controller.pool.get("h1"), run_id)
            return after_drop, status, left, len(status.suspect_hosts)
        finally:
            await controller.aclose()

    after_drop, status, left, suspects = asyncio.run(go())
    assert after_drop.hosts == ("h0",) and after_drop.suspect_hosts == ("h1",)
    assert "processes left: 1 on h1" in status.cleanup and suspects == 1
    assert left == 0
