"""``corral run --resume RUN`` on a run that still trains refuses, naming the live run, and
touches nothing: the run keeps its record and its processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.records.runs import RunInfo, read_run_info, run_dir_for, write_run_info
from remote.run.controller import SshRunController

try:
    from runkit import stand_in_rank
except ImportError:  # collected as a package
    from tests.remote.runkit import stand_in_rank  # type: ignore[no-redef]


async def test_resuming_a_run_that_still_trains_is_refused_and_changes_nothing(
        tmp_path: Path) -> None:
    host = HostSection(name="m", address="local", python=sys.executable,
                       workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1)
    config = ClusterConfig(path=tmp_path / "cluster.toml",
                           cluster=ClusterSection(name="c", master="m",
                                                  run_root=str(tmp_path / "runs")),
                           hosts=(host,))
    run_id = "c-20261122-000000-abcdef"
    run_dir = Path(run_dir_for(config, run_id))
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-4.pt").write_bytes(b"checkpoint")
    info = RunInfo(run_id=run_id, cluster="c", state="running", started=1.0, hosts=("m",))
    write_run_info(config, info)
    controller = SshRunController(config)
    with stand_in_rank(run_dir) as rank:  # a rank of that run
        try:
            with pytest.raises(CorralError) as caught:
                await controller.start(resume=run_id)
        finally:
            await controller.aclose()
            alive = rank.poll() is None
    assert caught.value.title == "run still running"
    assert f"run {run_id} is still running (1 process(es) on m)" in caught.value.message
    assert alive and read_run_info(config, run_id) == info
