"""``corral report`` of a script run as is (no events): what corral itself knows — hosts, their
ranks, how long it ran, how it ended — and no question marks."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import console.cli as cli
import console.run_cli as run_cli
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


def test_a_run_named_by_its_name_is_said_so_not_as_an_id_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from console.session import Session

    path = _cluster(tmp_path)
    for run_id, name in (("rep-20260101-000001-aaaaaa", "rep"),
                         ("rep-20260101-000002-bbbbbb", "rep")):
        write_recorded(tmp_path / "runs" / run_id, info(run_id, "completed", name=name), [])
    session = Session(path)
    said = Console(file=None, width=200, record=True)
    run_cli._say_resolved(said, session, "rep", "rep-20260101-000002-bbbbbb")
    run_cli._say_resolved(said, session, "rep-20260101-000001", "rep-20260101-000001-aaaaaa")
    lines = said.export_text().splitlines()
    assert lines[0].endswith("(the newest run named rep)"), lines
    assert lines[1].endswith("(the only run id starting with it)"), lines


def test_profile_of_a_script_cluster_says_it_measures_corrals_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import remote.api

    async def no_hosts(config: object) -> list[object]:
        return []

    monkeypatch.setattr(remote.api, "profile_cluster", no_hosts)
    assert cli.main(["-c", str(_cluster(tmp_path)), "profile"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "[run] script is set: this measures corral's own model `simple_cnn`" in out, out
    assert "not your script's" in out


def test_fetch_of_a_script_run_says_where_its_files_are(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path)
    write_recorded(tmp_path / "runs" / "rep-f", info("rep-f", "completed"), [])
    code = cli.main(["-c", str(path), "fetch", "rep-f"])
    err = " ".join(capsys.readouterr().err.split())
    assert code != 0 and "has not been written yet" not in err, err
    # the script's outputs are its working directory on rank 0's host: here there is none
    assert "nothing at" in err and f"{tmp_path / 'runs' / 'rep-f' / 'cwd' / 'fast'}" in err
    assert "left no working directory there" in err and "scp" not in err
