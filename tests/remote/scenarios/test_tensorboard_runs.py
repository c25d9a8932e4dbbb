"""The runs (slow tier) of what ``tests/remote/test_tensorboard.py`` tests: tensorBoard files from
a recorded run, read back with TensorBoard's own reader."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

try:
    from recorded import info, synthetic_run, write_recorded
except ImportError:  # collected as a package
    from tests.remote.recorded import info, synthetic_run, write_recorded  # type: ignore[no-redef]




REPO = Path(__file__).resolve().parents[3]


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_sigterm_to_corral_tensorboard_leaves_nothing_on_its_port(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    path = tmp_path / "cluster.toml"
    path.write_text(f'[cluster]\nname = "rep"\nmaster = "fast"\nrun_root = "{tmp_path}/runs"\n'
                    '[[hosts]]\nname = "fast"\naddress = "local"\n', encoding="utf-8")
    write_recorded(tmp_path / "runs" / "r4", info("r4", "completed"), synthetic_run(steps=3))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    corral = subprocess.Popen(
        [sys.executable, "-m", "console", "-c", str(path), "tensorboard", "--port", str(port)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _until(lambda: _port_open(port) or corral.poll() is not None, 120, "TensorBoard serving")
        assert corral.poll() is None, "corral tensorboard ended by itself"
        children = _children(corral.pid)
        assert children, "no TensorBoard process under corral"
        corral.send_signal(signal.SIGTERM)  # to corral alone, not its process group
        assert corral.wait(timeout=30) == 128 + signal.SIGTERM
        _until(lambda: not any(_alive(c) for c in children), 30, "TensorBoard gone")
        _until(lambda: not _port_open(port), 30, "the port free")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(corral.pid, signal.SIGKILL)  # only what this test started
        corral.wait()
