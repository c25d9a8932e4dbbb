"""``corral leave HOST`` (issue 61): the leave request is written on the leaving host, in its
run directory, where the ranks read it; what cannot leave is refused with what to do instead,
before anything is written (the master's host, a host not in the run, a run without live
membership, a run that ended). Local hosts: the request travels through the same transport
command as over SSH (``tests/remote/scenarios/test_membership_sshd.py`` runs it on sshd hosts)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from console.cli import main
from remote.config.read import load_cluster
from remote.records.runs import run_dir_for
from trainer.run_layout import RunLayout

RUNNING = {"run_id": "m-1", "cluster": "m", "state": "running", "started": 1.0,
           "hosts": ["a", "b"], "membership_port": 31000}


def _cluster(tmp_path: Path, record: dict[str, object], run: str = "") -> Path:
    hosts = "".join(f'[[hosts]]\nname = "{h}"\naddress = "local"\npython = "{sys.executable}"\n'
                    f'workdir = "{tmp_path}/work-{h}"\n\n' for h in ("a", "b", "c"))
    path = tmp_path / "cluster.toml"
    path.write_text(f'[cluster]\nname = "m"\nmaster = "a"\nrun_root = "{tmp_path}/runs"\n\n'
                    f'{hosts}[run]\nsteps = 2\n{run}', encoding="utf-8")
    run_dir = tmp_path / "runs" / "m-1"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(record), encoding="utf-8")
    return path


def _request(path: Path, host: str) -> Path:
    config = load_cluster(path)
    return Path(RunLayout(run_dir_for(config, "m-1")).leave_request(host))


def test_leave_writes_the_request_on_the_host_in_the_run_directory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path, RUNNING)
    assert main(["-c", str(path), "leave", "b"]) == 0
    assert "b leaves at its next step boundary" in capsys.readouterr().out
    assert _request(path, "b").read_text() == "asked\n"
    assert not _request(path, "b").with_name("leave-b.tmp").exists()  # renamed, not left


def test_a_low_communication_runs_host_is_said_to_leave_at_the_rounds_end(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path, RUNNING, run='exchange = "local"\n')
    assert main(["-c", str(path), "leave", "b"]) == 0
    said = capsys.readouterr().out
    assert "b leaves at the end of the round under way" in said, said
    assert "its change is in the round's average" in said, said
    assert _request(path, "b").read_text() == "asked\n"  # the same request: the ranks time it


@pytest.mark.parametrize(("host", "record", "said"), [
    ("a", RUNNING, "a is the master's host"),
    ("c", RUNNING, "c is not in run m-1 (its hosts now: a, b)"),
    ("z", RUNNING, "no host 'z' in"),
    ("b", {**RUNNING, "hosts": ["a"], "left_hosts": ["b"]}, "it left already"),
    ("b", {**RUNNING, "membership_port": 0}, "run m-1 has no live membership"),
    ("b", {**RUNNING, "state": "completed", "ended": 2.0}, "run m-1 has ended (completed)"),
])
def test_a_leave_that_cannot_be_asked_is_refused_and_writes_nothing(
        host: str, record: dict[str, object], said: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = _cluster(tmp_path, record)
    assert main(["-c", str(path), "leave", host, "--run", "m-1"]) != 0
    out = capsys.readouterr()
    assert said in out.out + out.err and "Traceback" not in out.out + out.err
    assert not _request(path, host).parent.exists()
