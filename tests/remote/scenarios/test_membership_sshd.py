"""Live membership over real SSH (issue 61), on sshd hosts that each see their own run root
(a private tmpfs per daemon): the pre-flight check of an ``on_host_loss = "continue"`` run
(live membership by default) tests a membership port besides the rendezvous port, reachable
from every worker; ``corral leave h1`` writes the leave request on
h1 alone, in its run directory, where its ranks read it."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from remote.api import leave_host
from remote.checks.membership_port import MEMBERSHIP_CHECK
from remote.checks.rendezvous_port import RENDEZVOUS_CHECK
from remote.hosts.pool import HostPool
from remote.hosts.transport import shell_path
from remote.records.runs import RunInfo, write_run_info
from remote.run.controller import SshRunController

try:
    from runkit import tiny_run
except ImportError:  # collected as a package
    from tests.remote.runkit import tiny_run  # type: ignore[no-redef]

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

RUN_ID = "t-20260101-000001-aaaaaa"


def _own_run_root(target: Path) -> list[str]:
    """The daemon in a mount namespace of its own where ``target`` is an empty tmpfs (room
    enough for the run-root check), so each host has its own run directory."""
    script = f"mount -t tmpfs -o size=65m tmpfs {target} && exec \"$@\""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]


async def test_the_check_tests_a_membership_port_and_leave_writes_on_that_host_alone(
        sshd_cluster, tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private run root per host")
    run_root = tmp_path / "ssh" / "runs"  # the cluster's run_root (see conftest)
    run_root.mkdir(parents=True)
    cluster = sshd_cluster(3, prefix=lambda i: _own_run_root(run_root))
    # on_host_loss = "continue" alone: live membership by default (``live_membership`` not set)
    config = cluster.config(run=replace(tiny_run(steps=2), on_host_loss="continue"))
    controller = SshRunController(config)
    try:
        report = await controller.check()
    finally:
        await controller.aclose()
    items = {(i.host, i.name): i for i in report.items}
    membership = [items[(h, MEMBERSHIP_CHECK)] for h in ("h0", "h1", "h2")]
    assert all(i.ok for i in membership), membership
    held = items[("h0", RENDEZVOUS_CHECK)].detail.split()[1]
    port = membership[0].detail.split()[1]
    assert port != held and all(f":{port}" in i.detail for i in membership[1:])
    assert "a lost host left behind without a restart" in membership[0].detail

    write_run_info(config, RunInfo(run_id=RUN_ID, cluster="t", state="running", started=1.0,
                                   hosts=("h0", "h1", "h2"), membership_port=int(port)))
    written = await leave_host(config, RUN_ID, "h1")
    pool = HostPool(config)
    try:
        seen = {}
        for host in ("h0", "h1", "h2"):
            transport = await pool.get(host)
            done = await transport.run(f"cat {shell_path(written)} 2>/dev/null || echo none")
            seen[host] = done.stdout.strip()
    finally:
        await pool.aclose()
    assert seen == {"h0": "none", "h1": "asked", "h2": "none"}
