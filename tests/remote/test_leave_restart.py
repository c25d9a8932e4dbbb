"""``corral leave`` on a run without live membership (issue 78): a script run as is keeps
today's restart from its own snapshot, but the leave says what will happen and asks first:
without ``--restart`` it is refused with what a restart does (nothing written, nothing
stopped); with it the run is stopped and launched again (``--resume``) on the other hosts. A run
with live membership needs no restart: ``--restart`` is refused there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from console.cli import main
from remote.config.cluster import ClusterConfig
from tests.fake_runs import FakeController
from tests.remote.test_membership_leave import RUNNING, _cluster, _request

SCRIPT_RUN = {**RUNNING, "membership_port": 0}


def _script_cluster(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text("print('hi')\n", encoding="utf-8")
    return _cluster(tmp_path, SCRIPT_RUN, run='script = "train.py"\n')


def test_a_script_runs_leave_says_it_is_a_restart_and_asks_for_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _script_cluster(tmp_path)
    assert main(["-c", str(path), "leave", "b"]) != 0
    out = capsys.readouterr()
    said = " ".join((out.out + out.err).split())
    assert "a script run as is" in said and "cannot leave it live" in said, said
    assert "launched again on the others from its newest checkpoint" in said, said
    assert "corral leave b --restart" in said and "Traceback" not in said
    assert not _request(path, "b").parent.exists()  # nothing written


def test_a_restart_is_refused_where_the_leave_is_live(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path, RUNNING)
    assert main(["-c", str(path), "leave", "b", "--restart"]) != 0
    out = capsys.readouterr()
    assert "has live membership" in " ".join((out.out + out.err).split())


def test_leave_restart_stops_the_run_and_launches_it_again_on_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = _script_cluster(tmp_path)
    opened: list[tuple[Any, FakeController]] = []

    def open_controller(where: Path | ClusterConfig) -> FakeController:
        opened.append((where, FakeController()))
        return opened[-1][1]

    monkeypatch.setattr("console.session.open_controller", open_controller)
    assert main(["-c", str(path), "leave", "b", "--restart"]) == 0, capsys.readouterr()
    stopping, relaunching = (controller for _, controller in opened)
    assert [name for name, _ in stopping.calls] == ["attach", "aclose"]
    assert stopping.runs[0]._stopped.is_set()  # stopped on every host first
    relaunched = opened[1][0]
    assert isinstance(relaunched, ClusterConfig)
    assert [h.name for h in relaunched.hosts] == ["a"]  # the run's hosts (a, b) less b
    assert ("start", {"resume": "m-1", "policy": None}) in relaunching.calls
    assert "runs again on a." in capsys.readouterr().out
