"""``corral join`` end to end over real SSH (issue 61): a 2-host run with live membership,
followed by ``corral run``, takes in a third host that cluster.toml got while it trained
(``corral join h2`` from another process), and ends with the parameters of one uninterrupted
process, the first two hosts' ranks in their first processes; a host whose torch is not the
run's (a stand-in, as the pre-flight tests fake it) is refused by the check, the run untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

try:
    from conftest import SshdCluster, SshdHost
    from test_checks import fake_torch_python
    from test_cli_sshd import corral
except ImportError:  # collected as a package module
    from tests.remote.conftest import SshdCluster, SshdHost  # type: ignore[no-redef]
    from tests.remote.test_checks import fake_torch_python  # type: ignore[no-redef]
    from tests.remote.test_cli_sshd import corral  # type: ignore[no-redef]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))  # its helpers
from trainer_runs import check, final_params, launch, max_rel_diff

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

STEPS = 600
RUN = (f"samples = 256\nglobal_batch = 32\nsteps = {STEPS}\nseed = 7\nlr = 0.02\n"
       "momentum = 0.9\ncheckpoint_every = 0\nlive_membership = true\n")
FLAGS = ("--samples", "256", "--global-batch", "32", "--steps", str(STEPS), "--seed", "7",
         "--lr", "0.02", "--momentum", "0.9", "--checkpoint-every", "0")
"""The same run as one process (the trainer's flags for ``RUN``)."""
WAIT_S = 240.0


def _toml(cluster: SshdCluster, root: Path, daemons: list[SshdHost],
          python: dict[str, str]) -> str:
    hosts = "".join(
        f'[[hosts]]\nname = "{d.name}"\naddress = "127.0.0.1"\nport = {d.port}\nuser = "root"\n'
        f'identity_file = "{cluster.client_key}"\n'
        f'python = "{python.get(d.name, sys.executable)}"\n'
        f'workdir = "{root}/work/{d.name}"\ngpus = 0\nnproc = 1\nthreads = 1\nslowdown = 12\n\n'
        for d in daemons)
    return (f'[cluster]\nname = "join"\nmaster = "h0"\nrun_root = "{root}/runs"\n\n{hosts}'
            f"[run]\n{RUN}\n[ssh]\nconnect_timeout = 5.0\n"
            f'known_hosts_file = "{cluster.known_hosts}"\nconfig_file = "{cluster.ssh_config}"\n')


def _events(run_dir: Path, member: int) -> list[dict[str, Any]]:
    path = run_dir / "metrics" / f"rank-{member}.jsonl"
    if not path.exists():
        return []
    whole = path.read_text().split("\n")[:-1]  # after the last newline: a line being written
    return [json.loads(line) for line in whole if line.strip()]


def _wait(what: str, condition: Callable[[], bool], run: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert run.poll() is None, f"{what}: `corral run` ended first"
        assert time.monotonic() < deadline, f"{what}: not within {WAIT_S} s"
        time.sleep(0.2)  # polling the run's files for a condition, with a deadline


def test_a_third_host_joins_a_running_run_and_a_wrong_torch_is_refused(
        sshd_cluster: Callable[..., SshdCluster], tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    check(launch(1, *FLAGS, "--run-dir", str(alone)))
    cluster = sshd_cluster(4)
    path = tmp_path / "cluster.toml"
    path.write_text(_toml(cluster, tmp_path, cluster.hosts[:2], {}), encoding="utf-8")
    run = subprocess.Popen([sys.executable, "-m", "console", "-c", str(path), "run"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           cwd=tmp_path, env={**os.environ, "COLUMNS": "200",
                                              "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        runs = tmp_path / "runs"
        _wait("the run's first steps", lambda: any(
            e["event"] == "step" and e["step"] >= 1
            for d in runs.glob("*/") for e in _events(d, 0)), run)
        run_dir = next(d for d in runs.iterdir() if (d / "metrics").is_dir())
        # cluster.toml gets two machines while the run trains; one has another torch
        wrong = fake_torch_python(tmp_path, version="1.13.0", gpus=0, version_file=True)
        path.write_text(_toml(cluster, tmp_path, cluster.hosts, {"h3": wrong}),
                        encoding="utf-8")
        asked = time.time()
        joined = corral(path, "join", "h2")
        assert joined.returncode == 0, joined.stdout + joined.stderr
        refused = corral(path, "join", "h3")  # while the run trains on with h2
        assert refused.returncode != 0 and "torch" in refused.stdout + refused.stderr, \
            refused.stdout + refused.stderr
        assert "Traceback" not in refused.stdout + refused.stderr
        output, _ = run.communicate(timeout=WAIT_S)
        assert run.returncode == 0, output[-4000:]
    finally:
        if run.poll() is None:
            corral(path, "stop", "--grace", "3")
            run.kill()
            run.wait()
    changes = [e for e in _events(run_dir, 0) if e["event"] == "membership"]
    assert [(e["change"], e["hosts"]) for e in changes] == [("joined", ["h2"])], changes
    member = changes[0]["members"][-1]
    assert any(e["event"] == "step" for e in _events(run_dir, member))  # it trained
    for first in (0, 1):  # the first hosts' ranks trained on in their first processes
        assert len([e for e in _events(run_dir, first) if e["event"] == "start"]) == 1
        steps = [e["step"] for e in _events(run_dir, first) if e["event"] == "step"]
        assert steps == list(range(1, STEPS + 1))
    record = json.loads((run_dir / "run.json").read_text())
    assert record["hosts"] == ["h0", "h1", "h2"] and not record.get("left_hosts")
    assert "h2 is joining" in output and "h2 joined at step" in output.replace("generation", "")
    first = min(e["t"] for e in _events(run_dir, member) if e["event"] == "step")
    print(f"join figures: `corral join` to the joiner's first step {first - asked:.1f} s, "
          f"seconds_to_step {changes[0]['seconds_to_step']}, "
          f"state bytes {changes[0]['state_bytes']}")
    assert max_rel_diff(final_params(alone), final_params(run_dir)) <= 1e-6
