"""Start a user's script on a rank as ``python SCRIPT ARGS...`` would.

corral's launch runs ``torchrun ... -m trainer.integrations.script_main --run-dir DIR SCRIPT
ARGS...`` rather than the script itself, so that every rank's command line carries the run
directory (``<run_root>/<run id>``) as corral's own ranks do: ``corral stop`` verifies by it that
nothing of the run is left, and ``corral check`` finds an earlier run's leftovers. The script
then runs as its own ``__main__``: ``sys.argv`` is ``[SCRIPT, *ARGS]`` and its folder is first on
the import path; the run directory reaches it as ``CORRAL_RUN_DIR``
(``trainer.integrations.contract``).
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence

from trainer.integrations.contract import RUN_DIR_ENV

USAGE = "usage: python -m trainer.integrations.script_main --run-dir DIR SCRIPT [ARG ...]"


def main(argv: Sequence[str] | None = None) -> None:
    """Run the script named in ``argv`` (default ``sys.argv[1:]``) in this process."""
    words = list(sys.argv[1:] if argv is None else argv)
    if len(words) < 3 or words[0] != "--run-dir":
        raise SystemExit(USAGE)
    run_dir, script, args = words[1], words[2], words[3:]
    os.environ[RUN_DIR_ENV] = run_dir
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
