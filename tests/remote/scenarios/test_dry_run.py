"""``corral run --dry-run``: the check, then each host's plan and exact command; nothing starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]


def _corral(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console", "-c", str(tmp_path / "c.toml"),
                           *args], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "250",
                               "PYTHONPATH": str(ROOT)})


def test_dry_run_prints_each_hosts_plan_and_command_and_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        '[cluster]\nname = "dry"\nrun_root = "~/runs"\n\n'
        '[[hosts]]\nname = "one"\naddress = "local"\ngpus = 0\nnproc = 2\nthreads = 1\n\n'
        '[[hosts]]\nname = "two"\naddress = "local"\ngpus = 0\nthreads = 1\n\n'
        '[run]\nglobal_batch = 30\nsplit = [10, 12, 8]\nsteps = 5\n', encoding="utf-8")
    done = _corral(tmp_path, "run", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "launch plan (nothing started): backend gloo, 3 rank(s)" in out
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in out.splitlines() if line.startswith(("│ one", "│ two")) and "gloo" in line}
    assert rows["one"] == ["0,1", "cpu (GPUs hidden)", "fp32", "gloo", "lo", "10,12"]
    assert rows["two"] == ["2", "cpu (GPUs hidden)", "fp32", "gloo", "lo", "8"]
    commands = [line.strip() for line in out.splitlines() if "-m trainer.launcher" in line]
    assert len(commands) == 2
    for command in commands:
        assert "--backend gloo --device cpu" in command and "--split 10,12,8" in command
    assert "CORRAL_RANK_BASE=2" in commands[1] and "--nproc-per-node 1" in commands[1]
    # Nothing was started or recorded.
    runs = tmp_path / "runs"  # the check may make the run root itself, but no run in it
    assert not runs.exists() or not any(runs.iterdir())
    assert "no runs yet" in _corral(tmp_path, "status").stdout


def test_dry_run_with_a_failing_check_prints_no_plan(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        '[cluster]\nname = "dry"\nrun_root = "~/runs"\n\n'
        '[[hosts]]\nname = "one"\naddress = "local"\npython = "/nonexistent/python"\n',
        encoding="utf-8")
    done = _corral(tmp_path, "run", "--dry-run")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no launch plan" in done.stdout and "-m trainer.launcher" not in done.stdout
