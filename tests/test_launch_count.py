"""The launch count (``launch_count.py``): what a launch is, and the tally over the suite's
pytest sessions judged against the budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import launch_count
import pytest

PY = "/venv/bin/python3"


@pytest.mark.parametrize(("args", "kind"), [
    ([PY, "-m", "torch.distributed.run", "--standalone", "-m", "trainer"], "torchrun"),
    ([PY, "/repo/tests/trainer/spawn_ranks.py", "--preload", "x", "2"], "spawn_ranks.py"),
    ([PY, "-m", "trainer", "--steps", "3"], "lone rank"),
    ([PY, "-m", "console", "-c", "c.toml", "run", "--detach"], "corral run"),
    (["corral", "run"], "corral run"),
    ([PY, "-m", "console", "-c", "c.toml", "run", "--dry-run"], None),
    ([PY, "-m", "console", "run", "--help"], None),
    ([PY, "-m", "console", "-c", "c.toml", "status"], None),
    ([PY, "/repo/tests/trainer/warm_spawner.py"], None),  # its forks are counted, not itself
    (["sh", "-c", f"{PY} -m torch.distributed.run --nnodes 2 -m trainer"], None),  # a host's
    ([PY, "-m", "trainer.launcher"], None),
    (["ssh", "h", "true"], None),
])
def test_a_launch_is_a_run_started_from_the_tests_own_process(args: list[str],
                                                                kind: str | None) -> None:
    assert launch_count.command_launch(args) == kind


def test_a_fast_test_counts_no_launch_and_a_slow_one_counts_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch_count, "launches", launch_count.Counter())
    subprocess.run([sys.executable, "-c", "pass"], check=True)  # no launch
    launch_count.note("corral run")  # in this fast test: a stand-in's start, not counted
    assert sum(launch_count.launches.values()) == 0
    monkeypatch.setattr(launch_count, "counting", True)  # as in a slow test
    launch_count.note("corral run")
    assert launch_count.launches == {"corral run": 1}


def test_sessions_add_up_in_the_tally_and_the_total_is_judged(tmp_path: Path) -> None:
    tally = str(tmp_path / "tally")
    assert launch_count.judged(7, None) == (7, f"launches: 7 (this run's), budget "
                                               f"{launch_count.LAUNCH_BUDGET}")
    assert launch_count.judged(5, tally)[0] == 5
    total, line = launch_count.judged(3, tally)
    assert total == 8 and line.startswith("launches: 8 (")
    assert Path(tally).read_text() == "5\n3\n"
