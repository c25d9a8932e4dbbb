"""A rank ends with the launcher that started it (issue 59, item 2): torch's launcher starts each
rank in a session of its own, so a killed launcher used to leave its ranks training as orphans
until a peer's hang guard noticed (~15 s and ~250 steps in a three-host run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from trainer_runs import REPO

from trainer.launch_contract import LAUNCHER_PID_ENV

CHILD = (
    "import ctypes, ctypes.util\n"
    "from trainer.launcher_death import die_with_launcher\n"
    "die_with_launcher()\n"
    "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
    "sig = ctypes.c_int(0)\n"
    "libc.prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG\n"
    "print('alive', sig.value)\n"
)


def _child(launcher_pid: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != LAUNCHER_PID_ENV}
    env["PYTHONPATH"] = str(REPO)
    if launcher_pid is not None:
        env[LAUNCHER_PID_ENV] = launcher_pid
    return subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_rank_of_corrals_launcher_is_killed_with_it() -> None:
    done = _child(str(os.getpid()))  # this test process is the child's parent: its launcher
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["alive", str(int(signal.SIGKILL))]


def test_a_rank_whose_launcher_is_already_gone_ends_at_once() -> None:
    # The race: the launcher died between its fork and the rank's prctl, so the kernel will
    # never send the signal; the rank sees its parent is not its launcher any more.
    done = _child("1")
    assert done.returncode == 128 + int(signal.SIGKILL)
    assert "alive" not in done.stdout
    assert "the launcher that started this rank is gone" in done.stderr


def test_a_rank_not_started_by_corrals_launcher_is_left_alone() -> None:
    done = _child(None)  # a user's own torchrun or python -m trainer
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["alive", "0"]
