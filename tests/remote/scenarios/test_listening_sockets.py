"""What a run opens on the network, as ``ss -ltnp`` sees it while it trains (loopback hosts):
the master's launcher listens on every interface at the rendezvous port corral chose (torch's
static rendezvous: its store is the ranks' store too) and rank 0 at the membership port the
check tested (the store of live joins and leaves, on by default), and only there; each rank
listens on its
cluster interface's address only (Gloo, ``GLOO_SOCKET_IFNAME``); nothing once the run is
stopped. docs/security.md."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def _corral(path: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "console", "-c", str(path), *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "300", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _listeners(run_id: str) -> list[str]:
    """``address:port`` of every TCP listener owned by a process of the run."""
    pids = subprocess.run(["pgrep", "-f", "--", f"--run-dir [^ ]*{run_id}|--rdzv-id {run_id}"],
                          capture_output=True, text=True).stdout.split()
    table = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    return [line.split()[3] for line in table.splitlines()
            if any(f"pid={pid}," in line for pid in pids)]


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_a_run_listens_only_on_its_rendezvous_port_and_not_after_a_stop(tmp_path: Path) -> None:
    host = (f'address = "local"\npython = "{sys.executable}"\nworkdir = "{tmp_path}/work"\n'
            "gpus = 0\nnproc = 1\nthreads = 1\n")
    path = tmp_path / "cluster.toml"
    path.write_text(f'[cluster]\nname = "l"\nrun_root = "{tmp_path}/runs"\n\n'
                    f'[[hosts]]\nname = "a"\n{host}\n[[hosts]]\nname = "b"\n{host}\n'
                    "[run]\nsteps = 100000\nglobal_batch = 4\n", encoding="utf-8")
    out = _corral(path, "run", "--detach")
    found = re.search(r"launched run (\S+): rendezvous 127\.0\.0\.1:(\d+)", out)
    assert found is not None, out
    run_id, port = found.group(1), found.group(2)
    try:
        deadline = time.monotonic() + 60
        events = tmp_path / "runs" / run_id / "metrics" / "rank-0.jsonl"
        while '"step"' not in (events.read_text() if events.exists() else ""):
            assert time.monotonic() < deadline, "the run never stepped"
            time.sleep(0.2)  # polls a file the run writes; the condition is the step event
        listening = _listeners(run_id)
    finally:
        _corral(path, "stop", run_id)
    everywhere = sorted(a.rsplit(":", 1)[1] for a in listening
                        if a.rsplit(":", 1)[0] in ("*", "0.0.0.0", "[::]"))
    record = json.loads((tmp_path / "runs" / run_id / "run.json").read_text())
    assert everywhere == sorted([port, str(record["membership_port"])]), listening
    ranks = [a for a in listening if a.startswith("127.0.0.1:")]  # the interface: lo here
    assert len(ranks) == 2 and len(listening) == 4, listening
    assert _listeners(run_id) == []
    # A normal stop is no error: the launchers' logs hold no traceback.
    for name in ("a", "b"):
        log = (tmp_path / "runs" / run_id / "logs" / name / "launcher.log").read_text()
        assert "Traceback" not in log and "SignalException" not in log, log[-2000:]
