"""A command's leftovers get ``TEARDOWN_S`` to end, threads of the default executor included:
a thread blocked for good (a read that never returns) does not keep corral alive after its
command returned or was interrupted (issue 59: Ctrl-C at the start ends within seconds)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_COMMAND = """\
import asyncio, sys, threading
import console.runner as runner
runner.TEARDOWN_S = 0.5
gate = threading.Event()
async def command():
    loop = asyncio.get_running_loop()
    loop.run_in_executor(None, gate.wait)  # a thread blocked until the gate opens
    if sys.argv[1] == "opens":
        loop.call_later(0.1, gate.set)
    await asyncio.sleep(0.2)
    return 3
sys.exit(runner.run_command(command()))
"""


def _run(gate: str) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _COMMAND, gate], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, env={"PYTHONPATH": str(ROOT)})
    return done, time.monotonic() - began


def test_a_blocked_executor_thread_does_not_keep_corral_alive() -> None:
    done, took = _run("never")
    assert done.returncode == 3, done.stderr  # the command's own status
    assert "leftovers did not end" in done.stderr and "a worker thread" in done.stderr
    assert took < 30, took  # Python 3.11's shutdown_default_executor waited for ever here


def test_a_thread_that_ends_is_waited_for_and_nothing_is_said() -> None:
    done, _ = _run("opens")
    assert done.returncode == 3 and done.stderr == "", done.stderr
