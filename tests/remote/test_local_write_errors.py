"""This machine failing to write a run's records ends the run as a full disk does (issue 59,
item 2): the hosts stopped, one sentence naming this machine's path; never a traceback, never a
host called unreachable for a local error, never ranks left training unfollowed."""

from __future__ import annotations

import shutil
from pathlib import Path

from remote.records.collected import CollectedCopy
from remote.run.failures import Cause
from remote.run.lifecycle import RunOutcome
from remote.run.monitor import RunMonitor
from remote.run.restart_policy import restart_refusal


def _unwritable(directory: Path) -> None:
    """``directory`` gone mid-run and a file in its place, which no write under it gets past
    (tests run as root, for whom a read-only mode is no obstacle)."""
    shutil.rmtree(directory)
    directory.write_text("")


def test_a_copy_that_cannot_be_written_says_why_and_raises_nothing(tmp_path: Path) -> None:
    copy = CollectedCopy(tmp_path / "run", "h")
    copy.append("metrics/rank-0.jsonl", '{"kind": "x"}', 14)
    copy.save()
    assert copy.write_error is None
    _unwritable(tmp_path / "run")
    copy.append("metrics/rank-1.jsonl", '{"kind": "x"}', 14)  # a new file: cannot be opened
    copy.save()
    assert copy.write_error is not None
    assert copy.write_error.startswith(str(tmp_path / "run"))
    assert "Not a directory" in copy.write_error
    copy.append("metrics/rank-0.jsonl", '{"kind": "y"}', 28)  # later lines: counted only
    assert copy.offsets["metrics/rank-0.jsonl"] == 28
    copy.close()


def test_a_local_write_error_names_this_machine_and_is_not_restarted() -> None:
    monitor = RunMonitor(run_id="r1", hosts=("h0", "h1"))
    monitor.local_write_failed("/runs/r1/collected/h0/.offsets.tmp: Read-only file system")
    monitor.local_write_failed("/runs/r1/run.json: Read-only file system")  # said once
    assert monitor.cause_settled()  # the hosts are stopped at once, no wait for a rank
    for host in ("h0", "h1"):
        monitor.observe(monitor.lost(host, RuntimeError("stopped")))
    final = monitor.finding()
    assert final.outcome is RunOutcome.FAILED and final.cause is Cause.LOCAL_WRITE
    assert final.detail.startswith(
        "this machine could not write the run's records at /runs/r1/collected/h0/.offsets.tmp:"
        " Read-only file system; the hosts were stopped: make it writable (or free space "
        "there) and `corral run --resume r1`")
    assert restart_refusal(final, 0, 3, wanted=True, stop_clean=True) == (
        "not restarted: this machine cannot record it")
