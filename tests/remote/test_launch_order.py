"""Hosts sharing an address launch at once, each waiting on the host for the one before it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from remote.launch import PREDECESSOR_WAIT_STEPS, wait_for_predecessor

CAP_S = PREDECESSOR_WAIT_STEPS * 0.01


def _wait(run_dir: Path) -> float:
    started = time.monotonic()
    subprocess.run(["sh", "-c", "set -e; " + wait_for_predecessor("a") + "echo go"],
                   cwd=run_dir, check=True, timeout=CAP_S + 30, capture_output=True)
    return time.monotonic() - started


def test_the_wait_ends_once_the_predecessor_group_holds_its_launcher(tmp_path: Path) -> None:
    (tmp_path / "hosts").mkdir()
    # A setsid shell that has forked a child, like the launcher's shell running torchrun.
    leader = subprocess.Popen(["setsid", "sh", "-c", f"{sys.executable} -c 'import time; "
                               "time.sleep(60)'; true"], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["pgrep", "-g", str(leader.pid)], capture_output=True
                             ).stdout.count(b"\n") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        (tmp_path / "hosts" / "a.pgid").write_text(f"{leader.pid}\n")
        assert _wait(tmp_path) < CAP_S / 3
    finally:
        subprocess.run(["kill", "-KILL", "--", f"-{leader.pid}"], check=False)
        leader.wait()


def test_the_wait_ends_when_the_predecessor_already_ended(tmp_path: Path) -> None:
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "a.exit").write_text("127\n")  # its launcher could not start
    assert _wait(tmp_path) < CAP_S / 3


def test_the_wait_gives_up_after_its_cap(tmp_path: Path, monkeypatch) -> None:
    import remote.launch

    monkeypatch.setattr(remote.launch, "PREDECESSOR_WAIT_STEPS", 20)
    (tmp_path / "hosts").mkdir()
    started = time.monotonic()
    subprocess.run(["sh", "-c", "set -e; " + remote.launch.wait_for_predecessor("a")],
                   cwd=tmp_path, check=True, timeout=30)
    assert 0.2 <= time.monotonic() - started < 10
