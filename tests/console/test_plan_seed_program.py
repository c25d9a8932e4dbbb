"""``corral run --dry-run`` shows what a host runs (issue 80): the working-directory program
every script run's host command starts with (``remote/run/seed_cwd.py``) is printed once, as
the shell assignment the commands name it by, rather than 55 lines inline in every command;
the assignment and a command together are exactly the command the host runs."""

from __future__ import annotations

import shlex

from console.plan_view import plan_commands
from remote.events import LaunchPreview, PlannedHost
from remote.run.seed_cwd import SEED_PY, seed_by_name, seed_words


def _run(host: str) -> str:
    """A host's command as the launch builds it (the seed program inline), then torchrun."""
    seed = seed_words("python3", f"~/r/hosts/{host}.data", f"~/r/cwd/{host}",
                      f"~/r/hosts/{host}.seeded", f"~/r/kept/{host}")
    return f"mkdir -p ~/r/cwd/{host} && {seed} && torchrun train.py --init_from=resume"


def test_the_seed_program_is_shown_once_and_the_commands_name_it() -> None:
    commands = {h: _run(h) for h in ("h0", "h1")}
    plan = LaunchPreview(run_id="r", backend="gloo", world_size=2, rendezvous="m:1",
                         script="train.py --init_from=resume", seed_program=SEED_PY,
                         hosts=tuple(PlannedHost(
                             host=h, ranks=(i,), device="cpu", gpus=0, visible_devices=None,
                             interface=None, precision="auto", shares=None,
                             command=seed_by_name(c)) for i, (h, c) in enumerate(commands.items())))
    text = plan_commands(plan).plain
    assert text.count("import fnmatch") == 1  # the program once, not per host
    lines = text.splitlines()
    assignment = text.partition("  SEED_CWD=")[2].split("\nh0:")[0]
    assert shlex.split(assignment) == [SEED_PY]  # the shell assignment sets the program
    for host, real in commands.items():
        shown = next(line.strip() for line in lines if "torchrun train.py" in line
                     and f"cwd/{host} " in line)
        assert '"$SEED_CWD"' in shown and "import" not in shown
        assert shown.replace('"$SEED_CWD"', shlex.quote(SEED_PY)) == real  # what the host runs
