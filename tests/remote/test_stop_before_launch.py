"""A stop before any launcher started (issue 59: Ctrl-C while ``corral run`` checks or pushes):
nothing of the run trains, so no stop script runs on the hosts (no grace to give, no group to
signal); the stop waits for the hosts' word that the check's and the push's commands are gone
and the run ends ``stopped``. Once its launch began, the stop is the whole one (TERM, grace,
KILL, verified)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import remote.run.handle as handle_module
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.events import StopReport
from remote.records.runs import read_run_info
from remote.run.controller import SshRunController
from remote.run.lifecycle import Phase


def _config(tmp_path: Path) -> ClusterConfig:
    host = HostSection(name="m", address="local", python=sys.executable,
                       workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1)
    return ClusterConfig(path=tmp_path / "cluster.toml",
                         cluster=ClusterSection(name="c", master="m",
                                                run_root=str(tmp_path / "runs")),
                         hosts=(host,))


@pytest.mark.parametrize(("phase", "scripted"), [
    (Phase.CHECKING, False), (Phase.PUSHING, False),
    (Phase.LAUNCHING, True), (Phase.RUNNING, True)])
async def test_a_stop_runs_the_stop_script_only_once_a_launch_began(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phase: Phase, scripted: bool) -> None:
    config = _config(tmp_path)
    stopped: list[dict[str, Any]] = []

    async def stop_run(*args: Any, **kwargs: Any) -> StopReport:
        stopped.append(kwargs)
        return StopReport(run_id=args[2], remaining={"m": 0})

    monkeypatch.setattr(handle_module, "stop_run", stop_run)
    controller = SshRunController(config)
    try:
        handle = await controller.start()
        handle._state = replace(handle._state, phase=phase)  # where the Ctrl-C found the run
        report = await handle.stop()
    finally:
        await controller.aclose()
    assert report.clean
    assert [kw["grace_s"] for kw in stopped] == ([10.0] if scripted else [])
    assert read_run_info(config, handle.run_id).state == "stopped"


async def test_a_restart_s_check_is_stopped_whole(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A later attempt's check may find an earlier attempt's ranks on a cut-off host."""
    config = _config(tmp_path)
    stopped: list[str] = []

    async def stop_run(*args: Any, **kwargs: Any) -> StopReport:
        stopped.append(args[2])
        return StopReport(run_id=args[2], remaining={"m": 0})

    monkeypatch.setattr(handle_module, "stop_run", stop_run)
    controller = SshRunController(config)
    try:
        handle = await controller.start()
        handle._state = replace(handle._state, restarts=1)
        await handle.stop()
    finally:
        await controller.aclose()
    assert stopped == [handle.run_id]
