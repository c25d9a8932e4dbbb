"""Every way out ends (issue 41 item 2): Ctrl-C, SIGTERM and ``corral stop`` while a run is
checking, launching or running end ``corral run`` within seconds, with no helper process, no
launch lock and no record in a transient state left behind, on hosts with and without ``env``
(one of each in every run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    from conftest import SshdCluster
    from runkit import run_processes
    from test_cli_sshd import ROOT, corral, write_toml
except ImportError:  # collected as a package module
    from tests.remote.conftest import SshdCluster  # type: ignore[no-redef]
    from tests.remote.runkit import run_processes  # type: ignore[no-redef]
    from tests.remote.scenarios.test_cli_sshd import ROOT, corral, write_toml  # type: ignore[no-redef]

# Beside other tests (the parallel phase): corral ends in a second or two, well inside the
# limit, and each case tells its own processes from the others' by its run id and folder.
pytestmark = [pytest.mark.sshd, pytest.mark.slow]

END_WITHIN_S = 15.0
"""A way out must end ``corral run`` within this (a stop's grace included)."""
TRANSIENT = ("checking", "pushing", "launching", "running", "stopping", "restarting")
PHASE_LINES = {"checking": "checking", "launching": ": starting", "running": "step "}
SLOWDOWN = 10.0
"""Every host emulates a device this many times slower: a running run's ranks sleep most of
each step (trainer/step/slowdown.py) instead of each taking a core until the way out."""


def start_run(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "console", "-c", str(path), "run"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=path.parent,
        env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}, start_new_session=True)


def read_until(proc: subprocess.Popen[str], needle: str, deadline_s: float = 120) -> str:
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if needle in line:
            return seen
    raise AssertionError(f"never saw {needle!r}:\n{seen}")


def env_helpers(tmp_path: Path) -> list[str]:
    """This test's shells still waiting for a host's ``env`` on stdin (their command line
    names the test's folder; other tests' are theirs)."""
    out = subprocess.run(["pgrep", "-af", "dd bs=1 count="], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines()
            if "pgrep" not in line and str(tmp_path) in line]


def runs_of(tmp_path: Path) -> list[dict[str, object]]:
    root = tmp_path / "runs"
    return [json.loads(p.read_text()) for p in root.glob("*/run.json")]


def assert_nothing_left(tmp_path: Path) -> None:
    runs = runs_of(tmp_path)
    for run in runs:
        assert run["state"] not in TRANSIENT, run
        assert run_processes(str(run["run_id"])) == [], run_processes(str(run["run_id"]))
    assert env_helpers(tmp_path) == []
    assert list((tmp_path / "runs").glob(".launch-lock-*")) == []


@pytest.mark.parametrize("phase", ["checking", "launching", "running"])
@pytest.mark.parametrize("way", ["ctrl-c", "sigterm", "stop"])
def test_every_way_out_ends_with_nothing_left(
    sshd_cluster, tmp_path: Path, phase: str, way: str
) -> None:
    cluster: SshdCluster = sshd_cluster(2)
    path = write_toml(cluster, tmp_path, "steps = 100000\nsamples = 64\nglobal_batch = 8",
                      host_lines=f"slowdown = {SLOWDOWN}\n")
    # h0 keeps its env (sent on stdin to a helper shell), h1 has none: both kinds in each run
    text = path.read_text()
    h1_env = text.rindex("\nenv = ")
    path.write_text(text[:h1_env] + text[text.index("\n", h1_env + 1):])
    proc = start_run(path)
    try:
        seen = read_until(proc, PHASE_LINES[phase])
        began = time.monotonic()
        if way == "ctrl-c":
            proc.send_signal(signal.SIGINT)
        elif way == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            stopped = corral(path, "stop", "--grace", "3", timeout=60)
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
            began = time.monotonic()  # the stop's own time is the stop tests' (tests/remote)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # what it said before it stuck, for the diagnosis
            proc.kill()
            rest, _ = proc.communicate()
            raise AssertionError(f"{way} at {phase}: corral did not end\n{seen}{rest}") from None
        took = time.monotonic() - began
        assert took < END_WITHIN_S, (took, seen + rest)
        assert "Traceback" not in seen + rest, seen + rest
        if phase == "running" and way != "stop":  # it detached: the run goes on until stopped
            assert "detached from run" in rest, rest
            stopped = corral(path, "stop", "--grace", "3", timeout=60)
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_nothing_left(tmp_path)
