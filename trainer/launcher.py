"""``python -m trainer.launcher ARGS``: torch's launcher (``torch.distributed.run``) with ARGS,
ending quietly when it is stopped by a signal.

``corral stop`` ends a run with SIGTERM to the launcher's process group; torchrun then raises
``SignalException`` out of its main function, and Python prints that as a traceback although
nothing failed. This entry point says one line instead and exits as a process killed by that
signal would (128 + its number). Any other error is torchrun's own, untouched. It also tells
the ranks its pid (``LAUNCHER_PID_ENV``): a rank ends when this process does, however it ends
(``trainer.launcher_death``). Once stopped, torchrun waits for its ranks up to
``STOP_WAIT_LIMIT_S`` rather than its own 30 s: a local-mode rank stops at its round's end
(docs/lowcomm.md), and the stop's own KILL after its grace bounds the wait. With live
membership (``CORRAL_MEMBERSHIP_PORT`` set) the agent skips torch's exit barrier: each agent
ends with its own ranks (``_no_exit_barrier``).
"""

from __future__ import annotations

import os
import sys

from trainer.gc_pause import collector_paused
from trainer.launch_contract import LAUNCHER_PID_ENV, STOP_WAIT_LIMIT_S
from trainer.membership.contract import MEMBERSHIP_PORT_ENV


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


def _wait_longer_when_stopped(agent: type) -> None:
    """torchrun's agent shuts its ranks down with ``_shutdown(signal)`` when it is stopped by a
    signal (and with ``_shutdown()`` after a rank failed or the run ended): only the former
    waits up to ``STOP_WAIT_LIMIT_S`` for the ranks to end by themselves."""
    shutdown = agent._shutdown  # type: ignore[attr-defined]

    def _shutdown(self: object, *args: object, **kwargs: object) -> None:
        if args or "death_sig" in kwargs:  # the death signal of a stop
            kwargs["timeout"] = int(STOP_WAIT_LIMIT_S)
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
