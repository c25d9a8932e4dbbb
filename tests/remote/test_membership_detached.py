"""A run nobody follows (``corral run --detach``) takes ``corral leave`` and ``corral join`` as a
followed run does (issue 78): the commands record the change in ``run.json`` themselves,
through the record's one writer, so a host that left can join again at once (it was refused as
"already in run" until a follower attached). A followed run's record stays its follower's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from console.cli import main
from remote.checks.plan import HostPlan
from remote.config.cluster import ClusterConfig
from remote.config.read import load_cluster
from remote.hosts.push import CodeBundle
from remote.records.owner import this_owner
from remote.records.runs import RunInfo, read_run_info
from remote.run import join
from tests.remote.test_membership_leave import RUNNING, _cluster


def _fake_join_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The join's check, push and launch, as if they went well (no process started)."""

    async def checked(config: ClusterConfig, info: RunInfo, host: str) -> join.JoinChecked:
        place = HostPlan(host=next(h for h in config.hosts if h.name == host), node_rank=0,
                         first_rank=0, nproc=1, device="cpu", gpus=0, visible_devices="",
                         interface=None, local_addr=None)
        return join.JoinChecked(code=CodeBundle(digest="d" * 64, tar=b"", files=0), place=place,
                                backend="gloo", user=None, present={}, recorded=None)

    async def pushed(*args: object) -> None:
        pass

    async def launched(*args: object) -> int:
        return 4242

    monkeypatch.setattr(join, "_check", checked)
    monkeypatch.setattr(join, "_push", pushed)
    monkeypatch.setattr(join, "launch_host", launched)


def test_a_detached_runs_host_leaves_and_joins_again_recorded_by_the_commands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _cluster(tmp_path, RUNNING)  # no owner: nobody follows it
    config = load_cluster(path)
    assert main(["-c", str(path), "leave", "b"]) == 0
    info = read_run_info(config, "m-1")
    assert (info.hosts, info.left_hosts) == (("a",), ("b",))
    _fake_join_work(monkeypatch)
    assert main(["-c", str(path), "join", "b"]) == 0  # not "b is in run m-1 already"
    info = read_run_info(config, "m-1")
    assert (info.hosts, info.left_hosts) == (("a", "b"), ())
    assert main(["-c", str(path), "leave", "b"]) == 0  # and it may leave again
    assert read_run_info(config, "m-1").left_hosts == ("b",)


def test_a_followed_runs_record_is_left_to_its_follower(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _cluster(tmp_path, {**RUNNING, "owner": this_owner()})  # this process follows it
    before = (tmp_path / "runs" / "m-1" / "run.json").read_text()
    assert main(["-c", str(path), "leave", "b"]) == 0
    _fake_join_work(monkeypatch)
    assert main(["-c", str(path), "join", "c"]) == 0
    assert json.loads((tmp_path / "runs" / "m-1" / "run.json").read_text()) == \
        json.loads(before)  # the follower records the ranks' event, not the command


@pytest.mark.parametrize("words", [["leave", "b"], ["join", "c"], ["leave", "b", "--restart"]])
def test_with_no_run_running_leave_and_join_name_their_own_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], words: list[str]) -> None:
    """On the old code they said ``name one: corral stop RUN`` (the stop's words)."""
    path = _cluster(tmp_path, {**RUNNING, "state": "completed"})
    assert main(["-c", str(path), *words]) == 2
    said = " ".join(capsys.readouterr().err.split())
    restart = " --restart" if "--restart" in words else ""
    assert f"nothing to {words[0]}: no run of this cluster is running; name one: corral " \
        f"{words[0]} {words[1]}{restart} --run RUN" in said, said
    assert "corral stop" not in said and "Traceback" not in said
