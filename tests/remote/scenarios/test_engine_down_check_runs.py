"""The runs (slow tier) of what ``tests/remote/test_engine_down_check.py`` tests: ``corral check``
of a host whose container engine cannot be used (issue 59, item 4): docker's daemon down is
named as the daemon (it read "image ."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from remote.checks.preflight import check_cluster
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.config.container import ContainerSection
from remote.hosts.pool import HostPool

ENGINES = {
    "daemon": ('echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. '
               'Is the docker daemon running?" >&2; exit 1'),
    "hung": "exec sleep 1000",
}


def _config(tmp_path: Path) -> ClusterConfig:
    host = HostSection(name="h1", address="local", python=sys.executable,
                       workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1,
                       container=ContainerSection(image="img:1", engine="docker"))
    return ClusterConfig(path=tmp_path / "cluster.toml", hosts=(host,),
                         cluster=ClusterSection(name="c", master="h1",
                                                run_root=str(tmp_path / "runs")))


@pytest.mark.parametrize("trouble", [
    "daemon", pytest.param("hung", marks=pytest.mark.serial)])  # a wall-clock limit: serial
async def test_an_engine_that_cannot_be_used_is_one_row_naming_it(
        tmp_path: Path, trouble: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f"#!/bin/sh\n{ENGINES[trouble]}\n")
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = _config(tmp_path)
    pool = HostPool(config)
    began = time.monotonic()
    try:
        report = await check_cluster(config, pool)
    finally:
        await pool.aclose()
    assert time.monotonic() - began < 15
    failed = [item for item in report.items if not item.ok]
    assert [(item.host, item.name) for item in failed] == [("h1", "engine")], report.items
    (row,) = failed
    if trouble == "daemon":
        assert row.detail.startswith("docker's daemon is not running on h1 (Cannot connect")
        assert "sudo systemctl start docker" in row.hint
    else:
        assert row.detail == "docker did not answer within 8 s on h1 (hung)"
    assert "image" not in row.detail.split("(")[0] and "python" not in row.detail
