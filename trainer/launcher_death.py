"""A rank ends with its launcher: a parent-death signal, set where the rank starts.

torch's launcher starts each rank in a session of its own, so a signal to the launcher's
process group (``corral stop``'s TERM, or a KILL of the group by anyone) does not reach the
ranks. When the launcher is killed outright (``kill -9``, the OOM killer, a container's engine
gone) it cannot end them either, and they would train on as orphans that nobody follows until
a peer's hang guard notices. Linux can tie a process to its parent instead: ``PR_SET_PDEATHSIG``
sends the rank a signal the moment the thread that started it exits.

KILL, not TERM: a TERM asks the rank to stop after the step every rank agrees on, which needs
collectives through a host whose launcher is gone; the run's last checkpoint is what a resume
starts from either way. The signal is set after the launcher may already have gone (between
its fork and this call): corral's launcher puts its own pid in ``LAUNCHER_PID_ENV``, and a rank
whose parent is no longer that pid ends at once. Elsewhere than Linux this does nothing.
Pushed with the trainer, so this module imports nothing of corral.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

from trainer.launch_contract import LAUNCHER_PID_ENV

PR_SET_PDEATHSIG = 1
"""prctl's option number (linux/prctl.h)."""


def die_with_launcher() -> None:
    """Have the kernel KILL this rank when its launcher exits; end now if it already has."""
    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    if not launcher.isdigit() or not sys.platform.startswith("linux"):
        return  # not started by corral's launcher (a user's own torchrun): nothing to tie to
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        return  # no such call here (a seccomp filter): the peers' hang guard is the fallback
    if os.getppid() != int(launcher):
        # The launcher died before the signal was set: the kernel will send nothing now.
        print("corral trainer: the launcher that started this rank is gone; ending",
              file=sys.stderr, flush=True)
        os._exit(128 + int(signal.SIGKILL))
