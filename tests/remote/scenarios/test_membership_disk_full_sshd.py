"""A host whose disk fills mid-run under live membership (the chaos run's ``fill_disk``, seed 81
faults 74 to 76, docs/reliability.md): its rank meets the full disk writing its events and
ends; the survivors take the host out and train on. What the user is told says why — the
rank's own "disk full on HOST at PATH" reaches rank 0 through the run's store, since nothing
it writes on that disk can — and the record names the hosts the ranks train with, as rank 0's
``membership`` events have them. Each sshd host sees a run root of its own (a tmpfs in a mount
namespace), so one host's disk fills alone."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

try:
    from conftest import SshdCluster
    from runkit import bounded, tiny_run
except ImportError:  # collected as a package
    from tests.remote.conftest import SshdCluster  # type: ignore[no-redef]
    from tests.remote.runkit import bounded, tiny_run  # type: ignore[no-redef]

from remote.events import HostStatus, LogLine, RankEvent, RunEvent
from remote.records.runs import read_run_info
from remote.run.controller import SshRunController
from trainer.events import MembershipEvent, StepEvent

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

FULL = "h2"


def _own_run_root(target: Path) -> list[str]:
    """The daemon in a mount namespace of its own where ``target`` is an empty tmpfs (room
    enough for the run-root check), so each host has its own run directory and disk."""
    script = f"mount -t tmpfs -o size=70m tmpfs {target} && exec \"$@\""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]


def _in_host(cluster: SshdCluster, host: str, command: str) -> None:
    """``command`` in ``host``'s mount namespace (its daemon's)."""
    daemon = next(h for h in cluster.hosts if h.name == host)
    subprocess.run(["nsenter", "-t", str(daemon.proc.pid), "-m", "sh", "-c", command],
                   check=False, capture_output=True, timeout=120)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nsenter") is None,
                    reason="needs root, unshare and nsenter for a disk per host")
def test_a_rank_ended_by_a_full_disk_says_so_and_the_record_follows_the_ranks(
        sshd_cluster: Callable[..., SshdCluster], tmp_path: Path) -> None:
    run_root = tmp_path / "ssh" / "runs"
    run_root.mkdir(parents=True)
    cluster = sshd_cluster(3, prefix=lambda i: _own_run_root(run_root))
    hosts = [cluster.host(f"h{i}", slowdown=8.0) for i in range(3)]
    config = cluster.config(hosts=hosts, run=replace(tiny_run(100_000), on_host_loss="continue"))
    fill = f"dd if=/dev/zero of={run_root}/fill bs=1M 2>/dev/null; sync"

    async def go() -> tuple[list[RunEvent], str, tuple[str, ...]]:
        controller = SshRunController(config)
        seen: list[RunEvent] = []
        handle = None
        try:
            handle = await controller.start()
            filled = left = False
            after = 0
            async for event in bounded(handle.events()):
                seen.append(event)
                if not (isinstance(event, RankEvent) and event.host == "h0"):
                    continue
                if isinstance(event.event, StepEvent) and not filled and event.event.step >= 3:
                    _in_host(cluster, FULL, fill)
                    filled = True
                elif (isinstance(event.event, MembershipEvent) and FULL in event.event.hosts
                      and event.event.change == "left"):
                    _in_host(cluster, FULL, f"rm -f {run_root}/fill")
                    left, after = True, event.event.step
                elif left and isinstance(event.event, StepEvent) and event.event.step > after + 2:
                    break
            recorded = read_run_info(config, handle.run_id)
            return seen, handle.run_id, tuple(recorded.hosts if recorded else ())
        finally:
            _in_host(cluster, FULL, f"rm -f {run_root}/fill")
            if handle is not None:  # every way out: nothing of the run outlives the test
                await handle.stop(grace_s=2.0)
            await controller.aclose()

    seen, _, recorded = asyncio.run(go())
    changes = [e.event for e in seen if isinstance(e, RankEvent)
               and isinstance(e.event, MembershipEvent)]
    words = [e.text for e in seen if isinstance(e, LogLine)]
    statuses = [e.detail for e in seen if isinstance(e, HostStatus) and e.host == FULL]
    (gone,) = [c for c in changes if c.change == "left"]
    assert gone.hosts == (FULL,) and gone.cause == "ranks_died"
    in_run = {"h0", "h1", "h2"} - set(gone.hosts)
    assert set(recorded) == in_run
    # The host's status and the run's log say why, in corral's words (on the old code:
    # "left at step N (ranks_died)", the cause lost with the rank's output on the full disk).
    assert gone.said is not None and gone.said.startswith(f"disk full on {FULL} at ")
    assert statuses[-1] == gone.host_detail() and f": disk full on {FULL} at " in statuses[-1]
    assert any(w.startswith(f"corral: {FULL} left because its ranks ended on: disk full on "
                            f"{FULL} at ") for w in words), words[-20:]
