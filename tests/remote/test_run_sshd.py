"""Whole runs over real sshd daemons: to the end (and its final weights fetched back), a rank
killed with SIGKILL, a host dropped."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

try:
    from runkit import bounded, run_processes, run_to_end, tiny_run
except ImportError:  # collected as a package
    from tests.remote.runkit import (  # type: ignore[no-redef]
        bounded,
        run_processes,
        run_to_end,
        tiny_run,
    )

from remote.api import RankEvent, RunStatus
from remote.hosts.pool import HostPool
from remote.records.runs import list_runs, local_run_dir, read_run_info
from remote.run.controller import SshRunController
from remote.run.fetch import fetch_results
from trainer.events import EndEvent, StartEvent, StepEvent

pytestmark = [pytest.mark.sshd, pytest.mark.slow]


async def test_a_two_host_run_trains_to_the_end(sshd_cluster) -> None:
    cluster = sshd_cluster(2)
    config = cluster.config(run=tiny_run(steps=4))
    run_id, events = await run_to_end(config)
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    rank_events = [e for e in events if isinstance(e, RankEvent)]
    starts = {e.event.rank: e.host for e in rank_events if isinstance(e.event, StartEvent)}
    assert sorted(starts) == [0, 1] and sorted(starts.values()) == ["h0", "h1"]
    ends = [e.event for e in rank_events if isinstance(e.event, EndEvent)]
    assert sorted(e.rank for e in ends) == [0, 1]
    assert all(e.status == "completed" and e.step == 4 for e in ends)
    steps = {(e.event.rank, e.event.step) for e in rank_events if isinstance(e.event, StepEvent)}
    assert steps == {(r, s) for r in (0, 1) for s in range(1, 5)}
    # The local copy holds every event line exactly as the ranks wrote it.
    run_dir = Path(config.cluster.run_root) / run_id
    for rank, host in starts.items():
        written = (run_dir / "metrics" / f"rank-{rank}.jsonl").read_bytes()
        copied = (run_dir / "collected" / host / "metrics" / f"rank-{rank}.jsonl").read_bytes()
        assert copied == written
    assert run_processes(run_id) == []
    assert [r.state for r in list_runs(config) if r.run_id == run_id] == ["completed"]
    # `corral fetch` of this real run (tests/remote/test_fetch_sshd.py has its other cases):
    # rank 0's host wrote RUN_DIR/final/, and it comes back with matching sha256 and loads.
    import torch

    pool = HostPool(config)
    try:
        result = await fetch_results(config, pool, read_run_info(config, run_id))
    finally:
        await pool.aclose()
    final_dir = local_run_dir(config, run_id) / "final"
    written = sorted(p.relative_to(final_dir) for p in final_dir.rglob("*") if p.is_file())
    assert written and result.host == "h0" and result.files == len(written)
    fetched = local_run_dir(config, run_id) / "fetched" / "final"
    for rel in written:
        assert hashlib.sha256((fetched / rel).read_bytes()).digest() == hashlib.sha256(
            (final_dir / rel).read_bytes()).digest()
    assert torch.load(fetched / written[0], map_location="cpu")  # the weights load


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
    # and reconnects: tests/remote/test_reliability_sshd.py).
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
