"""``corral status`` corrects a stale recorded state from the hosts, or says it cannot."""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

import console.cli as cli
from remote.config.read import load_cluster
from remote.records.owner import this_owner
from remote.records.runs import RunInfo, read_run_info, write_run_info


def _write_config(root: Path, address: str, extra: str = "") -> Path:
    path = root / "cluster.toml"
    path.write_text(f"""
[cluster]
name = "st"
master = "one"
run_root = "{root / 'runs'}"

[[hosts]]
name = "one"
address = "{address}"
python = "{sys.executable}"
workdir = "{root / 'work'}"
gpus = 0
nproc = 1
{extra}

[ssh]
connect_timeout = 2.0
known_hosts_file = "{root / 'known_hosts'}"
config_file = "{root / 'ssh_config'}"
""", encoding="utf-8")
    return path


def _closed_port() -> int:
    """A port of this machine nobody listens on (its host is unreachable)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _record(path: Path, run_id: str, state: str) -> None:
    config = load_cluster(path)
    write_run_info(config, RunInfo(run_id=run_id, cluster="st", state=state, started=time.time(),
                                   hosts=("one",), config_path=str(path)))


def test_status_corrects_a_run_left_running_from_its_exit_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_config(tmp_path, "local")
    _record(path, "st-1", "running")  # the follower died; the run ended meanwhile
    hosts_dir = tmp_path / "runs" / "st-1" / "hosts"
    hosts_dir.mkdir(parents=True)
    (hosts_dir / "one.exit").write_text("0\n")
    assert cli.main(["-c", str(path), "status"]) == 0
    out = capsys.readouterr().out
    assert "st-1" in out and "completed" in out and "could not be reached" not in out
    assert read_run_info(load_cluster(path), "st-1").state == "completed"


def test_status_keeps_the_record_with_a_note_when_a_host_is_unreachable(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_config(tmp_path, "127.0.0.1", extra=f"port = {_closed_port()}")
    _record(path, "st-2", "running")
    assert cli.main(["-c", str(path), "status"]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert "running" in out
    assert "the hosts of st-2 could not be reached" in out
    assert read_run_info(load_cluster(path), "st-2").state == "running"


def test_status_asks_a_host_a_live_run_left_behind_for_what_is_left_there(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # "two" was lost and left behind on the hot path: its blocked ranks may still run there,
    # so status asks it (unreachable here), as it asks a dropped host.
    path = _write_config(tmp_path, "local", extra=f"""
[[hosts]]
name = "two"
address = "127.0.0.1"
port = {_closed_port()}
python = "{sys.executable}"
gpus = 0
nproc = 1
""")
    config = load_cluster(path)
    write_run_info(config, RunInfo(run_id="st-5", cluster="st", state="running",
                                   started=time.time(), hosts=("one",), left_hosts=("two",),
                                   config_path=str(path)))
    assert cli.main(["-c", str(path), "status"]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert "the hosts of st-5 could not be reached" in out
    assert read_run_info(config, "st-5").suspect_hosts == ("two",)


def test_a_detached_run_nobody_followed_gets_its_end_time_and_a_consistent_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 59: its report said "no outcome recorded yet" beside "completed"."""
    path = _write_config(tmp_path, "local")
    config = load_cluster(path)
    started = float(int(time.time()) - 600)  # whole seconds, as the exit file's time
    write_run_info(config, RunInfo(run_id="st-3", cluster="st", state="running",
                                   started=started, hosts=("one",), config_path=str(path)))
    hosts_dir = tmp_path / "runs" / "st-3" / "hosts"
    hosts_dir.mkdir(parents=True)
    (hosts_dir / "one.exit").write_text("0\n")
    os.utime(hosts_dir / "one.exit", (started + 90, started + 90))  # its launcher's exit
    assert cli.main(["-c", str(path), "status"]) == 0
    recorded = read_run_info(config, "st-3")
    assert (recorded.state, recorded.ended) == ("completed", started + 90)
    capsys.readouterr()
    assert cli.main(["-c", str(path), "report", "st-3"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "outcome completed" in out and "no outcome recorded" not in out
    assert "ran 1m30s outcome completed" in out, out

    # A record an older corral left (an outcome, no end time) is not "no outcome" either.
    write_run_info(config, replace(recorded, ended=0.0))
    assert cli.main(["-c", str(path), "report", "st-3"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "outcome completed" in out and "no outcome recorded" not in out
    assert "ran not recorded (it ended with nobody following it)" in out


def test_the_report_of_a_detached_run_nobody_attached_to_says_how_it_ended(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 59: `corral report` alone (no `corral status` before it) said "running" and
    "no outcome recorded yet" for a --detach run that had completed: its hosts are asked."""
    path = _write_config(tmp_path, "local")
    config = load_cluster(path)
    started = float(int(time.time()) - 600)
    write_run_info(config, RunInfo(run_id="st-4", cluster="st", state="running",
                                   started=started, hosts=("one",), config_path=str(path)))
    hosts_dir = tmp_path / "runs" / "st-4" / "hosts"
    hosts_dir.mkdir(parents=True)
    (hosts_dir / "one.exit").write_text("0\n")
    os.utime(hosts_dir / "one.exit", (started + 75, started + 75))
    assert cli.main(["-c", str(path), "report", "st-4"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "outcome completed" in out and "ran 1m15s" in out, out
    assert "running" not in out and "no outcome recorded" not in out, out
    assert read_run_info(config, "st-4").state == "completed"  # recorded, as status would


def test_the_report_of_an_unfollowed_run_whose_hosts_are_unreachable_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_config(tmp_path, "127.0.0.1", extra=f"port = {_closed_port()}")
    _record(path, "st-5", "running")  # launched with --detach: no owner
    assert cli.main(["-c", str(path), "report", "st-5"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "the hosts of st-5 could not be reached" in out, out
    assert ("outcome running: not followed since launch: `corral attach st-5` follows it "
            "and reads its end") in out, out


def test_the_report_of_a_followed_run_asks_no_host(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run a live corral follows: its record is the truth, no connection is opened (the
    host here is unreachable, so a probe would show as a note)."""
    path = _write_config(tmp_path, "127.0.0.1", extra=f"port = {_closed_port()}")
    config = load_cluster(path)
    write_run_info(config, RunInfo(run_id="st-6", cluster="st", state="running",
                                   started=time.time(), hosts=("one",), config_path=str(path),
                                   owner=this_owner()))
    assert cli.main(["-c", str(path), "report", "st-6"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "outcome running" in out and "could not be reached" not in out, out
    assert "not followed" not in out, out
