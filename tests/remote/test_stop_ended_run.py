"""``corral stop`` on a run that had already completed says so: nothing was stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from remote.config.read import load_cluster
from remote.records.runs import RunInfo, read_run_info, write_run_info

ROOT = Path(__file__).resolve().parents[2]


def test_stopping_a_completed_run_says_it_had_already_completed(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(f'[cluster]\nname = "s"\nrun_root = "{tmp_path}/runs"\n\n[[hosts]]\n'
                    f'name = "a"\naddress = "local"\nworkdir = "{tmp_path}/work"\ngpus = 0\n'
                    "\n[run]\nsteps = 2\n", encoding="utf-8")
    config = load_cluster(path)
    run_id = "s-20261122-000000-abcdef"
    write_run_info(config, RunInfo(run_id=run_id, cluster="s", state="completed",
                                   started=1.0, hosts=("a",)))
    done = subprocess.run([sys.executable, "-m", "console", "-c", str(path), "stop", run_id],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert f"run {run_id} had already completed: nothing to stop" in done.stdout
    assert "stopped" not in done.stdout
    assert read_run_info(config, run_id).state == "completed"
