"""``python -m trainer.launcher ARGS``: torch's launcher (``torch.distributed.run``) with ARGS,
ending quietly when it is stopped by a signal.

``corral stop`` ends a run with SIGTERM to the launcher's process group; torchrun then raises
``SignalException`` out of its main function, and Python prints that as a traceback although
nothing failed. This entry point says one line instead and exits as a process killed by that
signal would (128 + its number). Any other error is torchrun's own, untouched. It also tells
the ranks its pid (``LAUNCHER_PID_ENV``): a rank ends when this process does, however it ends
(``trainer.launcher_death``). Once stopped, torchrun waits for its ranks the grace the stop
wrote (``stop_grace``; ``STOP_WAIT_LIMIT_S`` at most, rather than its own 30 s: a local-mode
rank stops at its round's end, docs/lowcomm.md), then KILLs each rank's process group itself:
the stop ends on the host even if corral's KILL never comes. With live
membership (``CORRAL_MEMBERSHIP_PORT`` set) the agent skips torch's exit barrier: each agent
ends with its own ranks (``_no_exit_barrier``).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from trainer.gc_pause import collector_paused
from trainer.launch_contract import HOST_ENV, LAUNCHER_PID_ENV, STOP_WAIT_LIMIT_S
from trainer.membership.contract import MEMBERSHIP_PORT_ENV
from trainer.run_layout import IN_RUN_DIR


def main() -> int:
    """Run torchrun with this process's arguments; its exit status."""
    with collector_paused():
        from torch.distributed.elastic.agent.server.local_elastic_agent import (
            LocalElasticAgent,
        )
        from torch.distributed.elastic.multiprocessing.api import SignalException
        from torch.distributed.run import main as torchrun

    _wait_longer_when_stopped(LocalElasticAgent)
    if os.environ.get(MEMBERSHIP_PORT_ENV):
        _no_exit_barrier(LocalElasticAgent)

    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())  # torch's agent (this process) starts the ranks
    try:
        torchrun()
    except SignalException as exc:
        print(f"corral launcher: stopped by {exc.sigval.name}", file=sys.stderr, flush=True)
        return 128 + int(exc.sigval)
    return 0


def stop_grace() -> float:
    """How long a stopped launcher waits for its ranks before it KILLs their process groups:
    the grace ``corral stop`` wrote in this host's ``stopped`` file (the launcher runs in the
    run directory) right before its TERM, else ``STOP_WAIT_LIMIT_S``. A rank that cannot
    handle its TERM (its main thread in a C call holding the GIL) is then KILLed on the host
    by the grace's end even when corral's own KILL never comes (its connection cut)."""
    stopped = Path(IN_RUN_DIR.host_file(os.environ.get(HOST_ENV, ""), "stopped"))
    try:
        grace = float(stopped.read_text().strip())
    except (OSError, ValueError):
        return STOP_WAIT_LIMIT_S
    return min(max(grace, 0.0), STOP_WAIT_LIMIT_S)


def _wait_longer_when_stopped(agent: type) -> None:
    """torchrun's agent shuts its ranks down with ``_shutdown(signal)`` when it is stopped by a
    signal (and with ``_shutdown()`` after a rank failed or the run ended): only the former
    waits for the ranks to end by themselves, ``stop_grace`` (not torch's own 30 s: a
    local-mode rank stops at its round's end), then KILLs each rank's process group."""
    shutdown = agent._shutdown  # type: ignore[attr-defined]

    def _shutdown(self: object, *args: object, **kwargs: object) -> None:
        if args or "death_sig" in kwargs:  # the death signal of a stop
            kwargs["timeout"] = max(1, math.ceil(stop_grace()))
        shutdown(self, *args, **kwargs)

    agent._shutdown = _shutdown  # type: ignore[attr-defined]


def _no_exit_barrier(agent: type) -> None:
    """torchrun's agent waits, once its ranks have ended, for every agent of the launch to end
    too (up to 300 s): a host whose ranks died, or that left, never comes, so a live
    membership's survivors would end 300 s after their last step. Their ranks agree on the end
    among themselves (the membership store, not the agents'), so each agent ends with its own
    ranks."""
    agent._exit_barrier = lambda self: None  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
