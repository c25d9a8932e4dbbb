"""A failed rank names its exception, not its exit status nor the last line it printed: a
hydra-shaped script prints its traceback, then a hint, then exits 1. The run's status line
(``corral run``, the console) names the exception the traceback ends with, and ``corral report``
names it too and lists the failed rank's last lines from the copied launcher log. (The rank's
own end event naming the exception is ``tests/trainer/scenarios/test_plain_events.py``'s.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from remote.records.summary import summarize
from trainer.launch_contract import log_line_prefix
from trainer.run_layout import RunLayout

try:
    from recorded import info, synthetic_run, write_recorded
    from test_report import _cluster, _report
    from test_run_monitor import _end, _exit, _log, _start
except ImportError:  # collected as a package
    from tests.remote.recorded import info, synthetic_run, write_recorded  # type: ignore[no-redef]
    from tests.remote.test_report import _cluster, _report  # type: ignore[no-redef]
    from tests.remote.test_run_monitor import (  # type: ignore[no-redef]
        _end,
        _exit,
        _log,
        _start,
    )

from remote.records.history import RANK_LINES_KEPT, load_history
from remote.run.monitor import RunMonitor

ERROR = "FileNotFoundError: [Errno 2] No such file or directory: 'data/input.txt'"
HINT = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."
HYDRA_OUTPUT = ["Traceback (most recent call last):",
                '  File "train.py", line 12, in main',
                "    with open('data/input.txt') as handle:",
                "         ^^^^^^^^^^^^^^^^^^^^^^",
                ERROR, "", HINT]
"""What a hydra app prints on stderr when its task raises (then it exits 1)."""


def test_the_status_line_names_the_exception_before_a_hint() -> None:
    """A rank whose end says only ``exited with status 1`` (a script that printed its own
    traceback): the failure names the traceback's exception, not the hint after it."""
    monitor = RunMonitor(run_id="r", hosts=("a", "b"))
    for item in (_start("a", 0), _start("b", 1), _exit("a", "0")):
        monitor.observe(item)
    for text in HYDRA_OUTPUT:
        monitor.observe(_log("b", text, rank=1))
    monitor.observe(_end("b", 1, "failed", error="exited with status 1"))
    monitor.observe(_exit("b", "1"))
    final = monitor.finding()
    lines = final.detail.splitlines()
    assert lines[0] == f"b rank 1 failed: {ERROR} (exited with status 1)"
    assert lines[-1] == f"[b rank 1] {HINT}"  # the lines that follow: the traceback and hint


def test_an_end_that_names_its_exception_is_kept() -> None:
    monitor = RunMonitor(run_id="r", hosts=("a",))
    for item in (_start("a", 0), _log("a", "ValueError: an older one", rank=0),
                 _end("a", 0, "failed", error=f"{ERROR} (exited with status 1)"),
                 _exit("a", "1")):
        monitor.observe(item)
    assert monitor.finding().detail.splitlines()[0] == \
        f"a rank 0 failed: {ERROR} (exited with status 1)"


def _launcher_log(run_dir: Path, host: str, rank: int, lines: list[str]) -> None:
    """``host``'s copied launcher log: torch's chatter and the rank's lines under its prefix."""
    path = Path(RunLayout(RunLayout(run_dir).collected(host)).launcher_log(host))
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = log_line_prefix(rank).replace("${local_rank}", "0")
    chatter = ("I1127 03:00:00.000000 42 torch/distributed/run.py:1] Using nproc_per_node=1.")
    path.write_text("\n".join([chatter, *[f"{prefix}{line}" for line in lines],
                               f"{log_line_prefix(0).replace('${local_rank}', '0')}other rank"])
                    + "\n", encoding="utf-8")


def test_the_report_names_the_exception_and_lists_the_ranks_last_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path)
    run_dir = tmp_path / "runs" / "rep-h"
    error = f"{ERROR} (exited with status 1)"
    write_recorded(run_dir, info("rep-h", "failed", detail=f"slow rank 1 failed: {error}"),
                   synthetic_run(steps=3, end="failed", error=error))
    _launcher_log(run_dir, "slow", 1, [f"step {n}" for n in range(20)] + HYDRA_OUTPUT)
    outcome = summarize(load_history(run_dir))[0].outcome
    assert outcome.error == error
    shown = [line for line in HYDRA_OUTPUT if line.strip()]
    assert outcome.last_lines == ([f"step {n}" for n in range(20)] + shown)[-RANK_LINES_KEPT:]
    code, out = _report(capsys, path, "rep-h")
    assert code == 0
    assert f"rank 1 on slow: {ERROR}" in out
    assert "Its last lines (slow rank 1):" in out
    assert out.index(ERROR, out.index("Its last lines")) < out.index(HINT)
    assert "other rank" not in out and "nproc_per_node" not in out


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
