"""The suite's launch count and its budget (docs/testing.md "Launches").

A *launch* is one start of a training run from a slow-tier test's own process:
- a corral run started in the process (``SshRunController.start``: a fresh run or a resume,
  on local, sshd or namespace hosts);
- a ``corral run`` the test starts as a command (``python -m console ... run``, not
  ``--dry-run`` or ``--help``);
- ranks the test starts itself: torchrun, the trainer tests' spawner or a lone
  ``python -m trainer`` as a process, a launch forked from the warm spawner
  (``tests/trainer/warm_spawner.py``), a process group from the fork server (``start_group``).

A host's own launch script (``sh -c ...``, inside a corral run) is part of that run, not a launch
of its own, and so are torchrun's restarts of a run's ranks. Each pytest session counts its
launches; where ``CORRAL_LAUNCH_TALLY`` names a file (``scripts/test.sh`` sets it for its
phases and the torch matrix), each session adds its count to it, and the total is judged. A
total above ``LAUNCH_BUDGET`` fails the session: a new scenario joins a run already launched
(a module-scoped run serving every check about it) or replaces one.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LAUNCH_BUDGET = 330
"""The most launches the whole suite (``scripts/test.sh``: its phases and the torch matrix)
may make (docs/testing.md "Launches": how it was set)."""
TALLY_ENV = "CORRAL_LAUNCH_TALLY"

launches: Counter[str] = Counter()
"""This process's launches by kind."""
counting = True
"""False while a fast-tier test runs (``tests/conftest.py``): it starts no real run by
construction, and a controller it starts on stand-in hosts is no launch."""


def note(kind: str) -> None:
    """Count one launch of ``kind`` in this process (in a slow-tier test)."""
    if counting:
        launches[kind] += 1


def command_launch(args: object) -> str | None:
    """The kind of launch a process started with ``args`` is, if it is one (see above)."""
    from tiers import slow_tier_command

    words = [str(a) for a in args] if isinstance(args, (list, tuple)) else str(args).split()
    if not words or Path(words[0]).name in ("sh", "bash"):
        return None  # a host's launch script, or a shell a test runs: never itself a launch
    if _corral_run(words):
        return "corral run"
    what = slow_tier_command(words)
    if what in ("torchrun", "spawn_ranks.py"):  # the warm spawner's start is none (its forks are)
        return what
    if Path(words[0]).name.startswith("python") and words[1:3] == ["-m", "trainer"]:
        return "lone rank"
    return None


def _corral_run(words: Sequence[str]) -> bool:
    """Whether ``words`` is ``corral run`` (``python -m console [-c FILE] run``), for real."""
    if Path(words[0]).name == "corral":
        rest = list(words[1:])
    elif words[1:3] == ["-m", "console"] and Path(words[0]).name.startswith("python"):
        rest = list(words[3:])
    else:
        return False
    if rest[:1] == ["-c"]:
        rest = rest[2:]
    return rest[:1] == ["run"] and not {"--dry-run", "--help", "-h"} & set(rest)


def install() -> None:
    """Count this process's launches from now on: wrap ``subprocess.Popen`` and
    ``SshRunController.start``."""
    import subprocess

    from remote.run.controller import SshRunController

    start = subprocess.Popen.__init__

    @functools.wraps(start)
    def counted(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
        kind = command_launch(args)
        if kind is not None:
            note(kind)
        start(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = counted  # type: ignore[method-assign]
    run_start = SshRunController.start

    @functools.wraps(run_start)
    async def run_started(self: Any, *args: Any, **kwargs: Any) -> Any:
        note("corral run")
        return await run_start(self, *args, **kwargs)

    SshRunController.start = run_started  # type: ignore[method-assign]


def judged(session_count: int, tally: str | None) -> tuple[int, str]:
    """The total to judge (this session's, plus what earlier sessions added to ``tally``; this
    session's count is added there) and a line saying it against the budget."""
    total = session_count
    if tally:
        with open(tally, "a") as out:
            out.write(f"{session_count}\n")
        total = sum(int(line) for line in Path(tally).read_text().split())
    where = f"this run's {session_count} and the tally's earlier" if tally else "this run's"
    return total, f"launches: {total} ({where}), budget {LAUNCH_BUDGET}"


def tally_path() -> str | None:
    """The tally file named in the environment, if any."""
    return os.environ.get(TALLY_ENV) or None
