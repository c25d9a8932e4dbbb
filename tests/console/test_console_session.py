"""The headless session the console and the CLI share: which run a command means when none
is named, and the run it follows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from console.model.run import RunModel
from console.session import Session
from profiles.user_errors import CorralError, UsageError
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.records.runs import local_run_dir
from tests.fake_runs import FakeController

try:
    from tests.remote.recorded import info, synthetic_run, write_recorded
except ImportError:  # run from tests/console
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "remote"))
    from recorded import info, synthetic_run, write_recorded  # type: ignore[no-redef]


def _cluster(root: Path, *states: str) -> ClusterConfig:
    """A cluster with one recorded run per state, oldest first (run ids ``run-0``, ...)."""
    hosts = tuple(HostSection(name=n, address="local") for n in ("fast", "slow"))
    config = ClusterConfig(path=root / "cluster.toml", hosts=hosts,
                           cluster=ClusterSection(name="rep", master="fast",
                                                  run_root=str(root / "runs")))
    for i, state in enumerate(states):
        run = info(f"run-{i}", state)
        write_recorded(local_run_dir(config, run.run_id), run, synthetic_run(steps=4))
    return config


def test_an_unnamed_run_is_the_newest_and_to_stop_the_newest_still_running(
        tmp_path: Path) -> None:
    session = Session(config=_cluster(tmp_path, "running", "completed"))
    assert session.unnamed_run() == "run-1"
    assert session.unnamed_run(live=True) == "run-0"
    assert [r.run_id for r in session.runs([])] == ["run-1"]
    assert [r.run_id for r in session.runs(["run-0"])] == ["run-0"]


def test_with_nothing_running_stop_asks_for_a_name(tmp_path: Path) -> None:
    session = Session(config=_cluster(tmp_path, "completed", "failed"))
    with pytest.raises(UsageError, match="name one") as raised:
        session.unnamed_run(live=True)
    assert raised.value.title == "nothing to stop"
    with pytest.raises(UsageError, match="no runs"):
        Session(config=_cluster(tmp_path / "empty")).unnamed_run()


def test_with_nothing_running_join_and_leave_say_their_own_command(tmp_path: Path) -> None:
    """`corral join HOST` after the run ended named `corral stop RUN` and "nothing to stop"."""
    session = Session(config=_cluster(tmp_path, "completed"))
    for command in ("join", "leave"):
        with pytest.raises(UsageError) as raised:
            session.unnamed_run(live=True, command=command)
        assert raised.value.title == f"no run to {command}"
        said = str(raised.value)
        assert f"corral {command} HOST --run RUN" in said and "stop" not in said
        assert "corral run --resume RUN" in said


async def test_the_followed_run_comes_before_the_records(tmp_path: Path) -> None:
    controller = FakeController()
    model = RunModel(cluster_name="rep", hosts=["fast", "slow"], policy="dynamic")
    session = Session(config=_cluster(tmp_path, "completed"), controller=controller,
                      model=model, clock=lambda: 5.0)
    handle = await session.controller.start(resume=False, policy=None)
    assert session.follow(handle) is model and session.handle is handle
    assert model.run_id == handle.run_id != "run-0" and model.live
    assert session.unnamed_run() == handle.run_id
    assert session.unnamed_run(live=True) == handle.run_id
    await session.aclose()
    assert controller.closed


def test_a_session_without_a_cluster_file_has_no_records() -> None:
    session = Session(controller=FakeController())
    assert session.recorded_runs() == []
    with pytest.raises(CorralError, match="no records of run x"):
        session.summary("x")
