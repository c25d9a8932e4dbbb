"""Live membership made cheap (issue 61, round 2): a joiner's set-up done before it asks in, and
a member whose process died known from its store connection closing (trainer/membership/),
without a process group (the runs are in test_live_membership.py)."""

from __future__ import annotations

import subprocess
import sys

from trainer_runs import REPO, rank_env

WARM = """
import sys
from trainer.membership.members import warm_up
from trainer.settings.train_config import TrainConfig
assert "torch._dynamo" not in sys.modules, "imported before the warm-up: nothing to prove"
warm_up(TrainConfig(optimizer=sys.argv[1]))
assert "torch._dynamo" in sys.modules
"""


def test_a_joiner_makes_its_optimizer_s_imports_before_it_asks_in() -> None:
    # What the run would wait for at the boundary that admits the joiner: the first making of
    # an optimizer imports torch._dynamo (seconds). A process of its own: imports are global.
    done = subprocess.run([sys.executable, "-c", WARM, "adamw"], cwd=REPO, env=rank_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
