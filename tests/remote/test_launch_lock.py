"""The launch lock says why it was not taken: another launch holds it (naming that run), or
it could not be made at all (naming the shell's reason), never a made-up holder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.hosts.pool import HostPool
from remote.run import launch_lock


def _config(tmp_path: Path, run_root: Path) -> ClusterConfig:
    host = HostSection(name="m", address="local", python=sys.executable,
                       workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1)
    return ClusterConfig(path=tmp_path / "cluster.toml",
                         cluster=ClusterSection(name="c", master="m", run_root=str(run_root)),
                         hosts=(host,))


async def test_a_lock_that_cannot_be_made_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where run_root's parent should be\n")
    config = _config(tmp_path, blocker / "runs")
    pool = HostPool(config)
    try:
        with pytest.raises(launch_lock.LockNotMade) as caught:
            await launch_lock.acquire(pool, config, "c-1")
    finally:
        await pool.aclose()
    message = caught.value.message
    assert f"{blocker}/runs/.launch-lock-c on m" in message
    assert "Not a directory" in message and "unknown" not in message


async def test_a_held_lock_names_the_run_that_holds_it(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path / "runs")
    pool = HostPool(config)
    try:
        await launch_lock.acquire(pool, config, "c-1")
        with pytest.raises(launch_lock.LaunchLocked) as caught:
            await launch_lock.acquire(pool, config, "c-2")
        await launch_lock.release(pool, config, "c-1")
        await launch_lock.acquire(pool, config, "c-2")
    finally:
        await pool.aclose()
    assert "run c-1 of cluster 'c' is being launched" in caught.value.message


async def test_a_launch_refused_by_the_lock_is_no_run_of_its_own(tmp_path: Path) -> None:
    from remote.events import RunStatus
    from remote.records.runs import list_runs
    from remote.run.controller import SshRunController

    config = _config(tmp_path, tmp_path / "runs")
    controller = SshRunController(config)
    try:
        await launch_lock.acquire(controller.pool, config, "c-20261122-000000-aaaaaa")
        handle = await controller.start()
        events = [e async for e in handle.events()]
    finally:
        await controller.aclose()
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "failed"
    assert "another run is launching" in final.detail and "corral stop" not in final.detail
    assert handle.run_id not in [r.run_id for r in list_runs(config)]


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes (what a refused launch must leave alone)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


async def test_a_resume_refused_by_the_lock_touches_nothing(tmp_path: Path) -> None:
    from dataclasses import asdict

    from remote.events import RunStatus
    from remote.records.runs import RunInfo, list_runs, write_run_info
    from remote.run.controller import SshRunController
    from trainer.run_layout import RunLayout

    config = _config(tmp_path, tmp_path / "runs")
    earlier = RunInfo(run_id="c-20261122-000000-bbbbbb", cluster="c", state="failed",
                      started=1.0, hosts=("m",), detail="rank 0 died", name="first try")
    write_run_info(config, earlier)
    checkpoint = Path(RunLayout(str(tmp_path / "runs" / earlier.run_id)).path(
        RunLayout.CHECKPOINTS)) / "step-4.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    before = _tree(tmp_path / "runs")
    controller = SshRunController(config)
    try:
        await launch_lock.acquire(controller.pool, config, "c-20261122-000000-aaaaaa")
        handle = await controller.start(resume=earlier.run_id)
        events = [e async for e in handle.events()]
        await launch_lock.release(controller.pool, config, "c-20261122-000000-aaaaaa")
    finally:
        await controller.aclose()
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "failed"
    assert "another run is launching" in final.detail
    assert "run c-20261122-000000-aaaaaa" in final.detail and "corral stop" not in final.detail
    assert _tree(tmp_path / "runs") == before  # its record, checkpoint and files untouched
    assert [asdict(r) for r in list_runs(config)] == [asdict(earlier)]
