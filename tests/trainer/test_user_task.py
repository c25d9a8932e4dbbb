"""The example user task (examples/tasks/curve.py) trains exactly under any split, and a broken
user task ends every rank with one line naming the file and line, before any collective."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from trainer_runs import REPO, check, events, final_params, launch, max_rel_diff, of_kind

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "tasks" / "curve.py"
FLAGS = ("--task", f"{EXAMPLE}:build", "--task-option", "samples=1024", "--task-option",
         "hidden=32", "--global-batch", "64", "--steps", "20", "--lr", "0.05", "--seed", "2",
         "--momentum", "0.9")


def test_the_example_task_gives_the_same_parameters_for_any_split(tmp_path: Path) -> None:
    params = {}
    for split in ("64", "40,24", "10,30,24"):
        run_dir = tmp_path / split.replace(",", "-")
        check(launch(len(split.split(",")), *FLAGS, "--split", split, "--run-dir", str(run_dir)))
        params[split] = final_params(run_dir)
    reference = params.pop("64")
    for split, p in params.items():
        assert max_rel_diff(reference, p) <= 1e-5, split
    steps = of_kind(events(tmp_path / "64", 0), "step")
    assert sum(e["global_loss"] for e in steps[-5:]) < sum(e["global_loss"] for e in steps[:5])
    start = of_kind(events(tmp_path / "64", 0), "start")[0]
    assert start["task"] == f"{EXAMPLE}:build" and start["model"] == "curve.py:build"
    assert (tmp_path / "64" / "final" / "model.pt").is_file()  # the default save_final


def test_an_exception_in_build_ends_every_rank_naming_file_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("from trainer.tasks import Task\n\n\ndef build(options):\n"
                      "    size = int(options['size'])\n    return Task(None, [], None)\n")
    t0 = time.monotonic()
    proc = launch(2, "--task", str(broken), "--task-option", "size=big",
                  "--run-dir", str(tmp_path / "run"), timeout=120)
    assert proc.returncode != 0
    # Our line comes first (no traceback of ours); what follows is the launcher's report.
    first = proc.stderr.splitlines()[0]
    assert first.startswith("corral trainer: invalid input: ")
    assert f"{broken}:5: ValueError: invalid literal for int()" in first
    assert time.monotonic() - t0 < 60  # nobody waited for a collective
    assert not (tmp_path / "run" / "metrics").exists()  # nothing started
