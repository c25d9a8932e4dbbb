"""Real headless ``corral run``s of the embedded demo on two local hosts (its "fast" and "medium":
the tracker's records do not depend on the host count, and each host costs a launcher and a rank
importing torch): one logged to MLflow live from the follower's copy, killed mid-run and
attached again; and one whose tracker cannot be reached, filled in by ``corral mlflow``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from remote.records.tracker_process import TrackerRecord
from tests.remote.runkit import descendants, run_processes
from tests.remote.scenarios.test_results_demo import demo_toml
from tests.remote.scenarios.test_tracking_runs import LOSS, client, steps_of, tracker_run
from tests.remote.test_tracking import closed_port
from trainer.run_layout import RunLayout

pytestmark = pytest.mark.slow
pytest.importorskip("mlflow")
pytest.importorskip("sqlalchemy")

REPO = Path(__file__).resolve().parents[3]
STEPS = 20
"""The demo's steps in these runs (the attach test's run is longer): two rebalances of the
dynamic policy (every 10 steps); each step costs the two ranks' CPU."""


def with_tracking(path: Path, tracking: str) -> Path:
    text = re.sub(r"(?ms)^\[tracking\].*?(?=^\[|\Z)", "", path.read_text(encoding="utf-8"))
    path.write_text(text + f"\n[tracking]\n{tracking}\n", encoding="utf-8")
    return path


def _split_in_two(found: re.Match[str]) -> str:
    """The demo's ``split`` line for two hosts: its global batch in two halves."""
    batch = sum(int(share) for share in found[1].split(","))
    return f"split = [{batch // 2}, {batch - batch // 2}]"


def on_two_hosts(path: Path, slowdown_times: float = 1.0) -> Path:
    """The demo at ``path`` without its "slow" host (one agent and one rank fewer: its global
    batch split over "fast" and "medium"), each host's emulated slowdown times
    ``slowdown_times`` (a sleep, no CPU: the same wall time in fewer steps)."""
    text = path.read_text(encoding="utf-8")
    text, dropped = re.subn(r'(?m)^\[\[hosts\]\]\nname = "slow"\n(?:.+\n)*', "", text)
    text, splits = re.subn(r"(?m)^split = \[([^\]]*)\]", _split_in_two, text)
    text, slowed = re.subn(r"(?m)^slowdown = ([\d.]+)",
                           lambda found: f"slowdown = {float(found[1]) * slowdown_times}", text)
    # The demo's layout is what these patterns read: a changed demo fails here, not later.
    assert (dropped, splits, slowed) == (1, 1, 2), (dropped, splits, slowed)
    path.write_text(text, encoding="utf-8")
    return path


def corral(path: Path, *words: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "console", "-c", str(path), *words],
                          capture_output=True, text=True, env=env, timeout=400, check=False)


def run_id_of(output: str) -> str:
    found = re.search(r"\b([\w.-]+-\d{8}-\d{6}-[0-9a-f]{6})\b", output)
    assert found, output
    return found.group(1)


def test_an_unreachable_tracker_leaves_the_run_alone_and_is_filled_in_afterwards(
        tmp_path: Path) -> None:
    path = with_tracking(on_two_hosts(demo_toml(tmp_path, STEPS)),
                         f'mlflow = "http://127.0.0.1:{closed_port()}"')
    done = corral(path, "run")
    assert done.returncode == 0, done.stdout + done.stderr
    said = [line for line in (done.stdout + done.stderr).splitlines() if "mlflow:" in line]
    assert len(said) == 1 and "corral mlflow RUN" in said[0], said
    db = tmp_path / "mlflow.db"
    with_tracking(path, f'mlflow = "sqlite:///{db}"')
    run_id = run_id_of(done.stdout)
    filled = corral(path, "mlflow", run_id)
    assert filled.returncode == 0, filled.stdout + filled.stderr
    run = tracker_run(db, run_id)
    assert steps_of(db, run) == list(range(1, STEPS + 1)) and run.info.status == "FINISHED"


def logged_record(runs: Path) -> tuple[str, int] | None:
    """The run id and the last step its MLflow record says the tracker has (None: no record
    yet)."""
    for record_path in runs.glob(f"*/{RunLayout.TRACKERS}/mlflow.json"):
        return record_path.parents[1].name, TrackerRecord.read(record_path).step
    return None


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_killed_corral_is_attached_again_in_the_same_mlflow_run_finished_with_its_model(
        tmp_path: Path) -> None:
    # The demo run headless, logged to MLflow live from the follower's copy: corral is killed
    # mid-run and attached again, and the one MLflow run has each step once, the run's
    # settings, its efficiency and loss, and its final model.
    db = tmp_path / "mlflow.db"
    # Long enough to go on for seconds after its first logged step (killed mid-run): at 5x
    # the emulated slowdowns (sleeps) 50 steps last as long as ~200 of the demo, for a
    # quarter of their CPU.
    steps = 50
    path = with_tracking(on_two_hosts(demo_toml(tmp_path, steps), slowdown_times=5.0),
                         f'mlflow = "sqlite:///{db}"')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(tmp_path / "run.out", "w", encoding="utf-8") as out:
        first = subprocess.Popen([sys.executable, "-m", "console", "-c", str(path), "run"],
                                 stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while (seen := logged_record(tmp_path / "runs")) is None or seen[1] == 0:
            assert first.poll() is None, (tmp_path / "run.out").read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "the tracker never logged a step"
            time.sleep(0.2)  # polling a file the tracker's process writes, with a deadline
        below = descendants(first.pid)  # the tracker's process among them
    finally:
        first.kill()  # only corral's own process: the ranks train on
        first.wait()
    run_id = seen[0]
    assert run_processes(run_id), "the run should go on without corral"
    attached = corral(path, "attach", "--headless", run_id)
    assert attached.returncode == 0, attached.stdout + attached.stderr
    run = tracker_run(db, run_id)  # exactly one MLflow run for it
    assert seen[1] < steps  # it was killed mid-run
    assert steps_of(db, run) == list(range(1, steps + 1))  # no step twice, none missing
    assert run.info.status == "FINISHED"
    assert run.data.params["run.global_batch"] == "96"
    assert run.data.params["run.policy"] == "dynamic"
    history = client(db).get_metric_history(run.info.run_id, "throughput/efficiency")
    assert len(history) == steps and all(0 < m.value <= 1.5 for m in history)
    assert LOSS in client(db).get_run(run.info.run_id).data.metrics
    assert client(db).list_artifacts(run.info.run_id, "model")  # the final model, local here
    assert "mlflow:" not in attached.stdout + attached.stderr  # the tracker said nothing amiss
    deadline = time.monotonic() + 30
    while run_processes(run_id) or not all(gone(pid) for pid in below):
        assert time.monotonic() < deadline, (run_processes(run_id), below)
        time.sleep(0.2)
