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
from remote.records.runs import read_run_info, write_run_info
from remote.run.controller import SshRunController


def _config(tmp_path: Path) -> ClusterConfig:
    host = HostSection(name="m", address="local", python=sys.executable,
                       workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1)
    return ClusterConfig(path=tmp_path / "cluster.toml",
                         cluster=ClusterSection(name="c", master="m",
                                                run_root=str(tmp_path / "runs")),
                         hosts=(host,))


async def test_a_stop_while_checking_runs_no_stop_script(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Which phase gets which stop is a table of ``decide`` (tests/remote/test_decide.py:
    ``test_a_user_s_stop_is_a_signal_answered_with_actions``); here the handle carries the
    stop out where a Ctrl-C finds a run just started, and records it ``stopped``."""
    config = _config(tmp_path)
    stopped: list[dict[str, Any]] = []

    async def stop_run(*args: Any, **kwargs: Any) -> StopReport:
        stopped.append(kwargs)
        return StopReport(run_id=args[2], remaining={"m": 0})

    monkeypatch.setattr(handle_module, "stop_run", stop_run)
    controller = SshRunController(config)
    try:
        handle = await controller.start()  # checking: no launcher started yet
        report = await handle.stop()
    finally:
        await controller.aclose()
    assert report.clean and stopped == []
    info = read_run_info(config, handle.run_id)
    assert info.state == "stopped" and info.cleanup  # what the stop found, recorded


async def test_a_stop_of_a_run_another_process_follows_is_the_whole_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path)
    stopped: list[dict[str, Any]] = []

    async def stop_run(*args: Any, **kwargs: Any) -> StopReport:
        stopped.append(kwargs)
        return StopReport(run_id=args[2], remaining={"m": 0})

    monkeypatch.setattr(handle_module, "stop_run", stop_run)
    controller = SshRunController(config)
    try:
        started = await controller.start()
        record = read_run_info(config, started.run_id)
        write_run_info(config, replace(record, state="running", pgids={"m": 4242}))
        handle = await controller.attach(started.run_id)  # as `corral stop RUN` does
        report = await handle.stop()
    finally:
        await controller.aclose()
    assert report.clean
    assert [(kw["grace_s"], kw["hosts"]) for kw in stopped] == [(10.0, ["m"])]
    assert read_run_info(config, handle.run_id).state == "stopped"
