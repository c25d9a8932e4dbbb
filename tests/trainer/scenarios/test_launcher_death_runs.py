"""The runs (slow tier) of what ``tests/trainer/test_launcher_death.py`` tests: a rank ends with
the launcher that started it (issue 59, item 2): torch's launcher starts each rank in a session
of its own, so a killed launcher used to leave its ranks training as orphans until a peer's hang
guard noticed (~15 s and ~250 steps in a three-host run)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainer_runs import REPO, rank_env, trainer_args

from trainer.membership.contract import MEMBERSHIP_PORT_ENV


def _children(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` is still a process (not gone, not a zombie waiting to be reaped)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def _wait_for(condition: object, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} not within {limit_s} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_killing_the_launcher_ends_its_rank(tmp_path: Path) -> None:
    env = rank_env()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "trainer.launcher", "--standalone", "--nproc-per-node", "1",
         *trainer_args("--steps", "1000000", "--global-batch", "8", "--samples", "64",
                       "--checkpoint-every", "0", "--run-dir", str(tmp_path / "run"))],
        env=env, cwd=REPO, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ranks: list[int] = []
    try:
        def rank_started() -> bool:
            ranks[:] = _children(launcher.pid)
            return bool(ranks) and (tmp_path / "run" / "metrics").is_dir()
        _wait_for(rank_started, 120, "the rank")
        os.killpg(launcher.pid, signal.SIGKILL)  # the launcher's group: the rank is not in it
        launcher.wait(timeout=30)
        _wait_for(lambda: not any(_alive(r) for r in ranks), 10,
                  "the rank's end after its launcher was killed")
    finally:
        for pid in ranks:  # only if the test failed: never leave a rank behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()


def _node(rank: int, port: int, script: Path) -> subprocess.Popen[bytes]:
    """One host's launcher of a two-host launch with live membership on."""
    env = {**os.environ, "PYTHONPATH": str(REPO),
           MEMBERSHIP_PORT_ENV: "1"}  # only its presence matters to the launcher
    return subprocess.Popen(
        [sys.executable, "-m", "trainer.launcher", "--nnodes", "2", "--nproc-per-node", "1",
         "--node-rank", str(rank), "--rdzv-backend", "static", "--rdzv-endpoint",
         f"127.0.0.1:{port}", "--max-restarts", "0", str(script)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.slow
def test_with_live_membership_a_launcher_ends_with_its_ranks_not_with_a_dead_hosts(
        tmp_path: Path) -> None:
    # Node 1's rank dies at once (its agent fails and never reaches torch's exit barrier); node
    # 0's rank ends well. Without the barrier skipped, node 0's agent would wait 300 s (seen:
    # alive 15 s after node 1 ended, without CORRAL_MEMBERSHIP_PORT).
    script = tmp_path / "rank.py"
    script.write_text("import os, sys\nsys.exit(1 if os.environ['GROUP_RANK'] == '1' else 0)\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    began = time.monotonic()
    nodes = [_node(rank, port, script) for rank in (0, 1)]
    try:
        assert nodes[1].wait(timeout=120) != 0
        assert nodes[0].wait(timeout=120) == 0
        assert time.monotonic() - began < 120  # torch's own barrier would hold it 300 s
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
