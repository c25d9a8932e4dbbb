"""The runs (slow tier) of what ``tests/remote/test_tracking.py`` tests: recorded runs sent to
MLflow (``corral mlflow``, ``TrackerWriter``), read back with MLflow's own client: one point per
step, the run's settings as params, the outcome as the run's status, and a run continued (a
follower killed, then another) in the same tracker run (an unreachable tracker, filled in later:
test_tracking_demo.py, on a real run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import console.cli as cli
from remote.config.read import load_cluster
from remote.records.history import read_lines
from remote.records.runs import read_run_info_at
from remote.records.tracking import Trackers, open_trackers

try:
    from recorded import info, synthetic_run, write_recorded
except ImportError:  # collected as a package
    from tests.remote.recorded import info, synthetic_run, write_recorded  # type: ignore[no-redef]
from tests.remote.test_tracking import cluster_toml

LOSS = "loss/global"


def client(db: Path) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{db}")


def tracker_run(db: Path, run_id: str) -> Any:
    """The MLflow run tagged with corral's ``run_id`` (exactly one)."""
    found = client(db).search_runs(
        [e.experiment_id for e in client(db).search_experiments()],
        filter_string=f"tags.`corral.run_id` = '{run_id}'")
    assert len(found) == 1, found
    return found[0]


def steps_of(db: Path, mlflow_run: Any, key: str = LOSS) -> list[int]:
    return [m.step for m in client(db).get_metric_history(mlflow_run.info.run_id, key)]


@pytest.mark.slow  # a tracker process per writer (it imports MLflow or Aim)
def test_recorded_runs_end_finished_killed_and_failed_with_one_loss_point_per_step(
        tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    path = cluster_toml(tmp_path, f'mlflow = "sqlite:///{db}"\nexperiment = "exp"')
    runs = tmp_path / "runs"
    write_recorded(runs / "done", info("done", "completed"), synthetic_run(steps=20, extra=True))
    write_recorded(runs / "halted", info("halted", "stopped"),
                   synthetic_run(steps=8, end="interrupted"))
    write_recorded(runs / "broken", info("broken", "failed"),
                   synthetic_run(steps=6, end="failed", error="boom"))
    assert cli.main(["-c", str(path), "mlflow"]) == 0
    done = tracker_run(db, "done")
    assert done.info.status == "FINISHED"
    assert steps_of(db, done) == list(range(1, 21))
    assert steps_of(db, done, "eval/loss") == [5, 10, 15, 20]
    assert steps_of(db, done, "rank_share/rank1")[:2] == [1, 2]
    assert done.data.params["run.global_batch"] == "16"
    assert done.data.params["run.policy"] == "dynamic"
    assert "corral_version" in done.data.params and "host.slow" in done.data.params
    shares = {m.step: m.value for m in client(db).get_metric_history(
        done.info.run_id, "rank_share/rank1")}
    assert shares[5] == pytest.approx(0.5) and shares[6] == pytest.approx(0.25)  # the move
    assert client(db).get_experiment(done.info.experiment_id).name == "exp"
    assert tracker_run(db, "halted").info.status == "KILLED"
    assert tracker_run(db, "broken").info.status == "FAILED"
    # Converting again sends nothing twice.
    assert cli.main(["-c", str(path), "mlflow", "done"]) == 0
    assert steps_of(db, tracker_run(db, "done")) == list(range(1, 21))


@pytest.mark.slow  # a tracker process per writer (it imports MLflow or Aim)
def test_a_follower_killed_mid_run_is_continued_in_the_same_tracker_run(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    config = load_cluster(cluster_toml(tmp_path, f'mlflow = "sqlite:///{db}"'))
    run_dir = tmp_path / "runs" / "r1"
    write_recorded(run_dir, info("r1", "running"), synthetic_run(steps=30, extra=True))
    lines = read_lines(run_dir)[0]
    # The first follower had seen part of the copy when it was killed (nothing ends its run).
    (run_dir / "collected").rename(run_dir / "full")
    write_recorded(run_dir, info("r1", "running"), [])
    first = open_trackers(config, read_run_info_at(run_dir), run_dir)
    first.writers[0].backfill(lines[: len(lines) // 2])
    first.writers[0].send_batch()  # what it had sent when killed
    first.close(None)
    first.wait()
    assert not first.take_warnings()
    sent = steps_of(db, tracker_run(db, "r1"))
    assert sent and sent == list(range(1, sent[-1] + 1)) and sent[-1] < 30
    assert tracker_run(db, "r1").info.status == "RUNNING"
    # The next follower (attach) reads the whole copy and sends only what is new.
    (run_dir / "full").rename(run_dir / "collected")
    second: Trackers = open_trackers(config, read_run_info_at(run_dir), run_dir)
    second.close("completed")
    second.wait()
    again = tracker_run(db, "r1")
    assert steps_of(db, again) == list(range(1, 31))
    assert steps_of(db, again, "eval/accuracy") == [5, 10, 15, 20, 25, 30]
    assert again.info.status == "FINISHED"
    warnings = second.take_warnings()
    assert len(warnings) == 1 and "corral fetch" in warnings[0]  # the model is on its host


def aim_run(repo_path: Path, run_dir: Path) -> Any:
    """The Aim run this corral run went to, indexed as ``aim up`` indexes it."""
    import json

    from aim import Repo
    from aim.sdk.index_manager import RepoIndexManager

    run_hash = json.loads((run_dir / "trackers" / "aim.json").read_text())["run"]
    repo = Repo(str(repo_path))
    RepoIndexManager.get_index_manager(repo).index(run_hash)
    return repo.get_run(run_hash)


@pytest.mark.slow  # a tracker process per writer (it imports MLflow or Aim)
def test_aim_gets_one_point_per_step_the_params_and_the_outcome_across_two_followers(
        tmp_path: Path) -> None:
    pytest.importorskip("aim")
    repo = tmp_path / "aim"
    config = load_cluster(cluster_toml(tmp_path, f'aim = "{repo}"\nlog_model = false'))
    run_dir = tmp_path / "runs" / "r1"
    write_recorded(run_dir, info("r1", "stopped"), synthetic_run(steps=16, end="interrupted"))
    lines = read_lines(run_dir)[0]
    first = open_trackers(config, read_run_info_at(run_dir), run_dir)
    first.writers[0].backfill(lines[: len(lines) // 2])
    first.close(None)
    first.wait()
    second = open_trackers(config, read_run_info_at(run_dir), run_dir)
    second.close("stopped")
    second.wait()
    assert not first.take_warnings() + second.take_warnings()
    run = aim_run(repo, run_dir)
    loss = next(m for m in run.metrics() if m.name == LOSS)
    assert (loss.first_step(), loss.last_step()) == (1, 16)
    assert sorted(loss.values.values_list()) == sorted(2.0 / step for step in range(1, 17))
    assert run["params"]["run.global_batch"] == "16" and run["outcome"] == "stopped"
    assert run.name == "r1" and run.experiment == "rep"
