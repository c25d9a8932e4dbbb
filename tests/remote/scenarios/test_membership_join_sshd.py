"""``corral join`` end to end over real SSH (issue 61): a 2-host run with live membership,
followed by ``corral run``, takes in a third host that cluster.toml got while it trained
(``corral join h2`` from another process); a few steps after the joiner's first, ``corral stop``
ends it on all three hosts after one step, and its parameters are those of one uninterrupted
process of as many steps, the first two hosts' ranks in their first processes; a host whose
torch is not the run's (a stand-in, as the pre-flight tests fake it) is refused by the check,
the run untouched; the joiner's facts are recorded with the launch's, so a next join takes
them from the record."""

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
    from tests.remote.scenarios.test_checks import fake_torch_python  # type: ignore[no-redef]
    from tests.remote.scenarios.test_cli_sshd import corral  # type: ignore[no-redef]
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "trainer"))  # its helpers
from trainer_runs import check, final_params, launch, max_rel_diff

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

STEPS = 600
"""More steps than the run takes: it is stopped once the joiner has trained ``JOINER_STEPS``,
however long the join took on this machine (it joined at steps 94 to 155 of a loaded 2-core
VM)."""
JOINER_STEPS = 5
WAIT_S = 240.0
RUN = (f"samples = 256\nglobal_batch = 32\nsteps = {STEPS}\nseed = 7\nlr = 0.02\n"
       "momentum = 0.9\ncheckpoint_every = 0\nlive_membership = true\n")


def flags(steps: int) -> tuple[str, ...]:
    """The same run as one process, ``steps`` long (the trainer's flags for ``RUN``: a
    constant learning rate, so its first steps do not depend on the run's length)."""
    return ("--samples", "256", "--global-batch", "32", "--steps", str(steps), "--seed", "7",
            "--lr", "0.02", "--momentum", "0.9", "--checkpoint-every", "0")


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


def _joined(run_dir: Path) -> list[dict[str, Any]]:
    return [e for e in _events(run_dir, 0) if e["event"] == "membership"]


def _steps(run_dir: Path, member: int) -> list[int]:
    return [e["step"] for e in _events(run_dir, member) if e["event"] == "step"]


def _stopped_after(run_dir: Path, member: int, joined_at: int) -> int:
    """The step after which the stop ended the run: stopped, not failed, each rank (the
    joiner's too) after the same step, which the run reached with the joiner in it, long
    before its last; the first hosts' ranks trained on in their first processes."""
    ends = [_events(run_dir, m)[-1] for m in (0, 1, member)]
    last = int(ends[0]["step"])
    assert [(e["event"], e["status"], e["step"]) for e in ends] == \
        [("end", "interrupted", last)] * 3, ends
    assert joined_at + JOINER_STEPS <= last < STEPS
    assert _steps(run_dir, member) == list(range(joined_at + 1, last + 1))  # it trained
    for first in (0, 1):
        assert len([e for e in _events(run_dir, first) if e["event"] == "start"]) == 1
        assert _steps(run_dir, first) == list(range(1, last + 1))
    return last


def test_a_third_host_joins_a_running_run_and_a_wrong_torch_is_refused(
        sshd_cluster: Callable[..., SshdCluster], tmp_path: Path) -> None:
    cluster = sshd_cluster(4)
    path = tmp_path / "cluster.toml"
    path.write_text(_toml(cluster, tmp_path, cluster.hosts[:2], {}), encoding="utf-8")
    run = subprocess.Popen([sys.executable, "-m", "console", "-c", str(path), "run"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           cwd=tmp_path, env={**os.environ, "COLUMNS": "200",
                                              "PYTHONPATH": str(Path(__file__).parents[3])})
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
        # A few steps of the joiner's, then a stop: every host's ranks end after one step.
        _wait("h2 joined", lambda: bool(_joined(run_dir)), run)
        member = _joined(run_dir)[0]["members"][-1]
        _wait(f"h2's first {JOINER_STEPS} steps",
              lambda: len(_steps(run_dir, member)) >= JOINER_STEPS, run)
        stopped = corral(path, "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        output, _ = run.communicate(timeout=WAIT_S)
    finally:
        if run.poll() is None:
            corral(path, "stop", "--grace", "3")
            run.kill()
            run.wait()
    changes = _joined(run_dir)
    assert [(e["change"], e["hosts"]) for e in changes] == [("joined", ["h2"])], changes
    last = _stopped_after(run_dir, member, joined_at=changes[0]["step"])
    record = json.loads((run_dir / "run.json").read_text())
    assert record["state"] == "stopped" and run.returncode == 1, output[-4000:]
    assert "no process left on any host" in record["cleanup"], record  # the joiner's included
    assert record["hosts"] == ["h0", "h1", "h2"] and not record.get("left_hosts")
    # the joiner's facts recorded as the launch's: a next join checks its links alone
    assert sorted(record["checked"]["address"]) == ["h0", "h1", "h2"], record["checked"]
    assert record["checked"]["torch"]["h2"] == record["checked"]["torch"]["h0"]
    assert "h2 is joining" in output and "h2 joined at step" in output.replace("generation", "")
    first = min(e["t"] for e in _events(run_dir, member) if e["event"] == "step")
    print(f"join figures: `corral join` to the joiner's first step {first - asked:.1f} s, "
          f"seconds_to_step {changes[0]['seconds_to_step']}, "
          f"state bytes {changes[0]['state_bytes']}")
    alone = tmp_path / "alone"
    check(launch(1, *flags(last), "--run-dir", str(alone)))
    assert max_rel_diff(final_params(alone), final_params(run_dir)) <= 1e-6
