"""``corral leave HOST --restart`` end to end, through the real command line (issue 78): a plain
script run as is (no live membership: the leave is a restart) started with ``corral run
--detach`` on two local hosts; ``corral leave h1 --restart`` stops it on every host and launches
it again on h0 alone from the script's own newest snapshot; ``corral attach --headless`` follows
it to its end: it completes, h0's ranks ran again in a world of one from the snapshot, h1 ran
no more, the record names h0 alone, and no process of the run is left. (The console's ``e`` on
such a run only says to use this command: ``console/controls.py``'s ``leave_host``.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from trainer.run_layout import RunLayout

try:
    from runkit import run_processes
except ImportError:  # collected as a package
    from tests.remote.runkit import run_processes  # type: ignore[no-redef]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[3]
WAIT_S = 300.0
STEPS = 40
SCRIPT = f"""\
import json, os, time
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
start = 0
if os.environ.get("CORRAL_RESTART", "0") != "0":
    start = json.load(open("out/ckpt.json"))["step"]
with open("starts.log", "a") as log:
    log.write(f"{{rank}} {{world}} {{start}}\\n")
os.makedirs("out", exist_ok=True)
for step in range(start, {STEPS}):
    opt.zero_grad()
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    if rank == 0:
        with open("out/ckpt.json.tmp", "w") as out:
            json.dump({{"step": step + 1}}, out)
        os.replace("out/ckpt.json.tmp", "out/ckpt.json")
    time.sleep(0.25)
dist.destroy_process_group()
"""


def _corral(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "console", "-c", str(path), *args],
                          capture_output=True, text=True, timeout=WAIT_S, cwd=path.parent,
                          env={**os.environ, "HOME": str(path.parent), "COLUMNS": "200",
                               "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})


def _wait(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_S} s"
        time.sleep(0.2)  # polling the run's files for a condition, with a deadline


def _snapshot_step(cwd: Path) -> int:
    try:
        return int(json.loads((cwd / "out" / "ckpt.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


def _cluster(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(SCRIPT, encoding="utf-8")
    hosts = "".join(f'[[hosts]]\nname = "{h}"\naddress = "local"\npython = "{sys.executable}"\n'
                    f'workdir = "{tmp_path}/work"\ngpus = 0\nnproc = 1\nthreads = 1\n\n'
                    for h in ("h0", "h1"))
    path = tmp_path / "cluster.toml"
    path.write_text(f'[cluster]\nname = "lr"\nmaster = "h0"\nrun_root = "{tmp_path}/runs"\n\n'
                    f'{hosts}[run]\nscript = "train.py"\n', encoding="utf-8")
    return path


def test_leave_restart_relaunches_the_run_without_the_host_and_it_completes(
        tmp_path: Path) -> None:
    path = _cluster(tmp_path)
    started = _corral(path, "run", "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    found = re.search(r"launched run ([^\s:]+)", started.stdout)
    assert found is not None, started.stdout
    run_id = found.group(1)
    layout = RunLayout(tmp_path / "runs" / run_id)
    h0, h1 = (Path(layout.script_cwd(h)) for h in ("h0", "h1"))
    try:
        _wait("h0's snapshot at step 3", lambda: _snapshot_step(h0) >= 3)
        left = _corral(path, "leave", "h1", "--restart")
        said = " ".join((left.stdout + left.stderr).split())
        assert left.returncode == 0, said
        assert "launching it again without h1" in said and "runs again on h0" in said, said
        followed = _corral(path, "attach", run_id, "--headless")
        assert followed.returncode == 0, followed.stdout + followed.stderr
    finally:
        _corral(path, "stop", run_id)
    record = json.loads((tmp_path / "runs" / run_id / "run.json").read_text())
    assert record["state"] == "completed" and record["hosts"] == ["h0"], record
    first, again = (line.split() for line in (h0 / "starts.log").read_text().splitlines())
    assert first == ["0", "2", "0"]
    assert again[:2] == ["0", "1"] and 3 <= int(again[2]) < STEPS, again  # from the snapshot
    assert len((h1 / "starts.log").read_text().splitlines()) == 1  # h1 ran no more
    assert _snapshot_step(h0) == STEPS
    assert run_processes(run_id) == []
