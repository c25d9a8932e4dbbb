"""corral's opt-in for a user's own script: the Hugging Face Trainer / TRL wrapper and the
plain-DDP helper, run as torchrun runs them (gloo, CPU) from examples/scripts/: their ranks
started with torchrun's environment by ``SPAWN_RANKS``, which imports the script's libraries
once for all of them; under torchrun itself where its agent is part of what is shown (a run
outside corral, a dynamic run; corral's own launch of these scripts is tests/remote's)."""

from __future__ import annotations

from trainer_runs import (
    REPO,
)

SCRIPTS = REPO / "examples" / "scripts"
"""The HF runs' global batch: 3 per device x 3 ranks, or 9 on one process."""


def test_ddp_port_differs_from_the_plain_script_in_five_lines() -> None:
    plain = (SCRIPTS / "ddp_tutorial_plain.py").read_text().splitlines()
    ported = (SCRIPTS / "ddp_tutorial.py").read_text().splitlines()
    changed = [line for line in ported if line.strip() and line not in plain]
    assert len(changed) <= 5, changed
