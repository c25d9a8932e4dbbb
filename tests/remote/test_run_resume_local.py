"""Restart = stop + start(resume=True): same run id and directory, from the newest checkpoint.

On one host: what is asserted (the id kept, the resumed start from the checkpoint, the stream
showing the new launch only, the stale state refreshed) is per run. Every rank of a multi-host
run resuming from rank 0's checkpoint is test_netns_fresh.py's resume (two hosts over SSH, the
master second) and, for a script, test_script_resume_local.py's; a second host here cost each
of the two launches a launcher and a rank, some 6 CPU-seconds each."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from remote.api import RankEvent, RunEvent, RunStatus
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.hosts.pool import HostPool
from remote.records.runs import list_runs, read_run_info, write_run_info
from remote.run.controller import SshRunController
from remote.run.refresh import refresh_runs
from trainer.events import CheckpointEvent, StartEvent, StepEvent

try:
    from runkit import bounded, run_processes, tiny_run
except ImportError:  # collected as a package
    from tests.remote.runkit import bounded, run_processes, tiny_run  # type: ignore[no-redef]

pytestmark = pytest.mark.slow


def _local_cluster(root: Path) -> ClusterConfig:
    hosts = tuple(
        HostSection(name=name, address="local", python=sys.executable,
                    workdir=str(root / "work"), gpus=0, nproc=1, threads=1)
        for name in ("one",))
    return ClusterConfig(
        path=root / "cluster.toml",
        cluster=ClusterSection(name="resume", master="one", run_root=str(root / "runs")),
        hosts=hosts, run=replace(tiny_run(steps=100000), checkpoint_every=3))


async def _until(handle, stop_when) -> list[RunEvent]:
    events: list[RunEvent] = []
    stopping = False
    async for event in bounded(handle.events()):
        events.append(event)
        if not stopping and stop_when(event):
            stopping = True
            assert (await handle.stop(grace_s=20)).clean
    return events


async def test_resume_relaunches_the_newest_run_from_its_checkpoint(tmp_path: Path) -> None:
    config = _local_cluster(tmp_path)
    controller = SshRunController(config)
    try:
        first = await controller.start()
        before = await _until(first, lambda e: isinstance(e, RankEvent)
                              and isinstance(e.event, CheckpointEvent))
        assert isinstance(before[-1], RunStatus) and before[-1].state == "stopped"
        saved = max(e.event.step for e in before if isinstance(e, RankEvent)
                    and isinstance(e.event, CheckpointEvent))

        second = await controller.start(resume=True)
        assert second.run_id == first.run_id
        after = await _until(second, lambda e: isinstance(e, RankEvent) and not e.replayed
                             and isinstance(e.event, StepEvent))
    finally:
        await controller.aclose()
    live = [e for e in after if isinstance(e, RankEvent) and not e.replayed]
    starts = [e.event for e in live if isinstance(e.event, StartEvent)]
    assert len(starts) == len(config.hosts)
    assert all(s.step >= saved and s.resumed_from for s in starts)
    # The resumed stream replays the record first (every seat folds the whole run), then shows
    # the new launch from its checkpoint on.
    assert any(isinstance(e, RankEvent) and e.replayed for e in after)
    steps = [e.event.step for e in live if isinstance(e.event, StepEvent)]
    assert steps and min(steps) > saved
    assert isinstance(after[-1], RunStatus) and after[-1].state == "stopped"
    assert [r.run_id for r in list_runs(config)] == [first.run_id]
    assert run_processes(first.run_id) == []

    # A follower that died leaves a stale state; the hosts tell the real one.
    write_run_info(config, replace(read_run_info(config, first.run_id), state="running"))
    pool = HostPool(config)
    try:
        assert [r.state for r in await refresh_runs(config, pool)] == ["stopped"]
    finally:
        await pool.aclose()
    assert [r.state for r in list_runs(config)] == ["stopped"]
