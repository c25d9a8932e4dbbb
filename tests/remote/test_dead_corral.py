"""A dead corral leaves nothing that blocks (issue 41 item 4): its launch lock is taken over
with one line, its record left in a launch state reads ``failed`` with why, ``attach`` of its
run returns at once, and ``corral stop`` of a launching run releases the lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from remote.hosts.pool import HostPool
from remote.records.owner import owner_gone, process_start, this_owner
from remote.records.runs import list_runs, read_run_info
from remote.run import launch_lock
from remote.run.record import RunRecord
from tests.remote.test_launch_lock import _config


def dead_owner() -> str:
    """The owner words of a process of this machine that has ended."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    return f"{socket.gethostname()} {gone.pid} {process_start(os.getpid())}"


def test_an_owner_is_gone_only_when_its_process_is() -> None:
    assert not owner_gone(this_owner())
    assert owner_gone(dead_owner())
    pid, start = this_owner().split()[1:]
    assert owner_gone(f"{socket.gethostname()} {pid} {int(start) + 1}")  # a reused pid
    assert not owner_gone(f"another-machine {pid} 1")  # cannot be checked from here


async def test_a_dead_corrals_lock_is_taken_over_with_one_line(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path / "runs")
    lock = Path(launch_lock.lock_path(config))
    lock.mkdir(parents=True)
    (lock / "owner").write_text(f"c-old {time.time():.0f} {dead_owner()}\n")
    pool = HostPool(config)
    try:
        line = await launch_lock.acquire(pool, config, "c-new")
        assert line is not None and "run c-old" in line and "is gone" in line
        assert (lock / "owner").read_text().startswith("c-new ")
        with pytest.raises(launch_lock.LaunchLocked):  # a live holder is never taken over
            await launch_lock.acquire(pool, config, "c-third")
    finally:
        await pool.aclose()


def test_a_record_left_launching_by_a_dead_corral_reads_failed(tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "c-1"
    run_dir.mkdir(parents=True)
    record = {"run_id": "c-1", "cluster": "c", "state": "launching", "started": 1.0,
              "hosts": ["m"], "owner": dead_owner()}
    (run_dir / "run.json").write_text(json.dumps(record))
    info = read_run_info(config, "c-1")
    assert info.state == "failed" and "ended while it was launching" in info.detail
    assert "corral stop c-1" in info.detail and info.suspect_hosts == ("m",)
    assert json.loads((run_dir / "run.json").read_text())["state"] == "failed"
    live = {**record, "run_id": "c-2", "owner": this_owner()}
    (tmp_path / "runs" / "c-2").mkdir()
    (tmp_path / "runs" / "c-2" / "run.json").write_text(json.dumps(live))
    assert {r.run_id: r.state for r in list_runs(config)} == {"c-1": "failed",
                                                               "c-2": "launching"}


def test_a_record_left_by_a_dead_corral_after_its_hosts_started_reads_following_lost(
        tmp_path: Path) -> None:
    config = _config(tmp_path, tmp_path / "runs")
    for run_id, state, pgids in (("c-1", "launching", {"m": 123}), ("c-2", "running", None)):
        (tmp_path / "runs" / run_id).mkdir(parents=True)
        (tmp_path / "runs" / run_id / "run.json").write_text(json.dumps(
            {"run_id": run_id, "cluster": "c", "state": state, "started": 1.0, "hosts": ["m"],
             "owner": dead_owner(), "pgids": pgids}))
        info = read_run_info(config, run_id)
        assert info.state == "running", info  # it may well train on: not "failed"
        assert info.detail.startswith("following lost: the corral that launched it")
        assert f"`corral attach {run_id}` follows it" in info.detail
        assert json.loads((tmp_path / "runs" / run_id / "run.json").read_text())[
            "detail"] == info.detail
    record = RunRecord(config, read_run_info(config, "c-2"))
    record.adopt()  # `corral attach`: this process follows it now
    adopted = read_run_info(config, "c-2")
    assert adopted.owner == this_owner() and adopted.detail == ""
    record.detached()  # and leaves it on purpose: nobody follows it, and none was lost
    assert read_run_info(config, "c-2").owner == ""
    assert read_run_info(config, "c-2").detail == ""
