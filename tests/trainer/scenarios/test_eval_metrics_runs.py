"""The runs (slow tier) of what ``tests/trainer/test_eval_metrics.py`` tests: every metric a task's
``evaluate`` returns is reported (its sum over the held-out set divided by the unit count), in
the ``eval`` event, the run's figures and TensorBoard; sums that cannot be reduced stop the run
at the first evaluation with one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from trainer_runs import REPO, events, launch, of_kind

EXAMPLE = REPO / "examples" / "tasks" / "curve.py"


FLAGS = ("--task-option", "samples=256", "--task-option", "hidden=8", "--global-batch", "32",
         "--steps", "4", "--eval-every", "2", "--lr", "0.05")


@pytest.mark.slow
def test_a_task_metric_reaches_the_eval_event(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = launch(2, "--task", f"{EXAMPLE}:build", *FLAGS, "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = of_kind(events(run_dir, 0), "eval")
    assert [e["step"] for e in evals] == [2, 4]
    assert all({"loss", "abs_error", "perplexity"} <= set(e["metrics"]) for e in evals)
    assert "abs_error" in proc.stdout + proc.stderr  # the eval line names it too


@pytest.mark.slow
def test_a_sum_that_is_not_a_number_stops_the_run_at_the_first_evaluation(
        tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text(EXAMPLE.read_text().replace(
        '"count": float(len(y))}', '"count": float(len(y)), "errors": error}'))
    run_dir = tmp_path / "run"
    proc = launch(2, "--task", f"{broken}:build", *FLAGS, "--run-dir", str(run_dir),
                  timeout=180)
    assert proc.returncode != 0
    assert "'errors'" in proc.stderr and "not one number" in proc.stderr
    steps = of_kind(events(run_dir, 0), "step")
    assert max(e["step"] for e in steps) == 2  # it trained up to the first evaluation
