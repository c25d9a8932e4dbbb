"""``python -m trainer``: one rank of a corral run (start it with torch's launcher).

    python -m torch.distributed.run --nproc-per-node 2 -m trainer --global-batch 64 --steps 100

Bad input (flags, splits, data) is reported in one line with exit code 2, before the rank
joins the process group, so no other rank is left waiting on a collective.
"""

from __future__ import annotations

import os
import sys

from profiles.user_errors import CorralError
from trainer.disk_full import exit_status
from trainer.gc_pause import collector_paused
from trainer.launcher_death import die_with_launcher
from trainer.settings.train_config import parse_config


def main(argv: list[str] | None = None) -> int:
    """Parse flags, train, and return the exit code."""
    die_with_launcher()  # no rank trains on once the launcher that started it is gone
    try:
        config = parse_config(argv)
        with collector_paused():  # torch loads only once the flags are known good
            from trainer.train import train

        return train(config)
    except CorralError as exc:
        # Every rank hits the same error and says so: the launcher ends the other ranks as soon
        # as the first one exits, so a line left to one chosen rank could be cut off unsaid.
        print(f"corral trainer: {exc.title}: {exc.message}", file=sys.stderr, flush=True)
        return exit_status(exc)  # a full disk's: its words above may not fit on that disk


def _exit(code: int) -> None:
    """Leave without the interpreter's teardown.

    Everything that must last is already on disk (events are flushed per line, checkpoints are
    renamed into place). Interpreter teardown can still run C++ destructors of torch's
    communication threads after the process group is gone, which now and then aborts a rank
    that finished cleanly ("terminate called without an active exception") and turns a
    completed run into a failed one.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
