"""``corral report`` of a script run as is (no events): what corral itself knows — hosts, their
ranks, how long it ran, how it ended — and no question marks."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import console.cli as cli
from remote.config.read import load_cluster
from remote.records.runs import read_run_info
from remote.run.record import RunRecord

try:
    from recorded import info, write_recorded
except ImportError:  # collected as a package
    from tests.remote.recorded import info, write_recorded  # type: ignore[no-redef]


def _cluster(root: Path) -> Path:
    path = root / "cluster.toml"
    (root / "train.py").write_text("print('hi')\n")
    path.write_text(f"""
[cluster]
name = "rep"
master = "fast"
run_root = "{root / 'runs'}"
[[hosts]]
name = "fast"
address = "local"
nproc = 2
[[hosts]]
name = "slow"
address = "local"
[run]
script = "train.py"
""", encoding="utf-8")
    return path


def _report(capsys: pytest.CaptureFixture[str], path: Path, run_id: str) -> str:
    assert cli.main(["-c", str(path), "report", run_id]) == 0
    captured = capsys.readouterr()
    return " ".join((captured.out + captured.err).split())


@pytest.mark.parametrize(("state", "detail"), [
    ("completed", ""), ("failed", "slow rank 2 failed: ValueError: bad shape")])
def test_an_as_is_script_run_reports_hosts_ranks_time_and_outcome(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], state: str, detail: str) -> None:
    path = _cluster(tmp_path)
    recorded = dataclasses.replace(
        info("rep-s", state, detail=detail), ranks={"fast": [0, 1], "slow": [2]})
    recorded = dataclasses.replace(recorded, ended=recorded.started + 125.0)
    write_recorded(tmp_path / "runs" / "rep-s", recorded, [])  # as is: no event at all
    out = _report(capsys, path, "rep-s")
    assert "?" not in out, out
    assert "fast (ranks 0-1), slow (rank 2)" in out and "on 3 rank(s)" in out
    assert "ran 2m05s" in out, out
    assert re.search(rf"outcome {state}", out), out
    if detail:
        assert "The run failed." in out and detail in out


def test_the_record_keeps_when_the_outcome_came(tmp_path: Path) -> None:
    config = load_cluster(_cluster(tmp_path))
    record = RunRecord.new(config, info("rep-t", "running"))
    assert read_run_info(config, "rep-t").ended == 0.0
    record.state("completed")
    recorded = read_run_info(config, "rep-t")
    assert recorded.state == "completed" and recorded.ended >= recorded.started
