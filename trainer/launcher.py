"""``python -m trainer.launcher ARGS``: torch's launcher (``torch.distributed.run``) with ARGS,
ending quietly when it is stopped by a signal.

``corral stop`` ends a run with SIGTERM to the launcher's process group; torchrun then raises
``SignalException`` out of its main function, and Python prints that as a traceback although
nothing failed. This entry point says one line instead and exits as a process killed by that
signal would (128 + its number). Any other error is torchrun's own, untouched. It also tells
the ranks its pid (``LAUNCHER_PID_ENV``): a rank ends when this process does, however it ends
(``trainer.launcher_death``).
"""

from __future__ import annotations

import os
import sys

from trainer.launch_contract import LAUNCHER_PID_ENV


def main() -> int:
    """Run torchrun with this process's arguments; its exit status."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.run import main as torchrun

    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())  # torch's agent (this process) starts the ranks
    try:
        torchrun()
    except SignalException as exc:
        print(f"corral launcher: stopped by {exc.sigval.name}", file=sys.stderr, flush=True)
        return 128 + int(exc.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
