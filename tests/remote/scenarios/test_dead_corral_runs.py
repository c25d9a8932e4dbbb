"""The runs (slow tier) of what ``tests/remote/test_dead_corral.py`` tests: a dead corral leaves
nothing that blocks (issue 41 item 4): its launch lock is taken over with one line, its record
left in a launch state reads ``failed`` with why, ``attach`` of its run returns at once, and
``corral stop`` of a launching run releases the lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.remote.scenarios.test_ways_out_sshd import read_until

ROOT = Path(__file__).resolve().parents[3]


def _cluster_toml(tmp_path: Path, steps: int = 100000) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(
        f'[cluster]\nname = "d"\nmaster = "m"\nrun_root = "{tmp_path}/runs"\n\n'
        f'[[hosts]]\nname = "m"\naddress = "local"\npython = "{sys.executable}"\n'
        f'workdir = "{tmp_path}/work"\ngpus = 0\nnproc = 1\nthreads = 1\n\n'
        f"[run]\nsteps = {steps}\nsamples = 64\nglobal_batch = 8\n", encoding="utf-8")
    return path


def corral(path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console", "-c", str(path), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=path.parent,
                          env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["checking", "pushing"])
def test_after_kill_9_of_corral_run_nothing_blocks(tmp_path: Path, phase: str) -> None:
    path = _cluster_toml(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "console", "-c", str(path), "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)})
    try:
        read_until(proc, f"m: {phase}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (killed,) = [p.parent.name for p in (tmp_path / "runs").glob("*/run.json")]
    began = time.monotonic()
    attached = corral(path, "attach", killed, "--headless", timeout=60)
    assert time.monotonic() - began < 15, attached.stdout
    assert attached.returncode != 0, attached.stdout + attached.stderr
    assert "ended while it was" in attached.stdout + attached.stderr
    report = corral(path, "report", killed)
    assert "Traceback" not in report.stdout + report.stderr
    assert "running" not in json.loads((tmp_path / "runs" / killed / "run.json").read_text())[
        "state"]
    stopped = corral(path, "stop", killed, "--grace", "2")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not list((tmp_path / "runs").glob(".launch-lock-*"))


def _steps(events_file: Path) -> list[int]:
    return [json.loads(line)["step"] for line in events_file.read_text().splitlines()
            if json.loads(line).get("event") == "step"]


@pytest.mark.slow
def test_kill_9_of_corral_run_after_launch_is_following_lost_and_attach_adopts_it(
        tmp_path: Path) -> None:
    path = _cluster_toml(tmp_path, steps=300)
    proc = subprocess.Popen([sys.executable, "-m", "console", "-c", str(path), "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)})
    try:
        read_until(proc, "step 10/300")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (killed,) = [p.parent.name for p in (tmp_path / "runs").glob("*/run.json")]
    status = corral(path, "status")
    assert "following lost" in status.stdout, status.stdout + status.stderr
    attached = corral(path, "attach", killed, "--headless", timeout=240)
    assert attached.returncode == 0, attached.stdout + attached.stderr
    record = json.loads((tmp_path / "runs" / killed / "run.json").read_text())
    assert record["state"] == "completed", record
    # No event lost or repeated: the copy holds every step once, as the host's own file does.
    metrics = Path("metrics") / "rank-0.jsonl"
    copied = _steps(tmp_path / "runs" / killed / "collected" / "m" / metrics)
    assert copied == _steps(tmp_path / "runs" / killed / metrics) == list(range(1, 301))
