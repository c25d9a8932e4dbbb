"""A loss right at a step's end, which rank 0 saw a step earlier than a survivor: the new
generation takes the training state from that survivor, and it must be the survivor's own.

Found by the chaos run (bench/chaos.py seed 82: 120 of 120 faults survived, the parameters
3.4e-5 from the one-process replay; run again, 6.3e-7 at every stop through step 613, 7.3e-5
at the end): n2's rank ended on a full disk right after a completed step (exit 28, a live
leave, one step redone) while this machine's own full disk failed the run. A rank that ends
right after its step's gather leaves its peers in that gather at different points: one
completed the step; rank 0, still reading, had the gather aborted under it by that peer's
loss. The survivors' plan then sends the state from the one that completed the step, but the
new generation's DDP wrapping first gave every rank rank 0's parameters, so the state sent
was rank 0's parameters with the survivor's step and optimizer: one step's update lost, for
good (``trainer/exact_parts.py: _own_state_kept``).

The faults are set in the ranks' own process (tests/trainer/lost_step_rank.py): h2's step
event of step ``STEP`` meets a full disk; rank 0's gather of that step fails once h2 ended.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import launch_count
import pytest
from lost_step_rank import CUT_AFTER_END_OF, CUT_AT, FULL_AT
from membership_runs import LiveRun
from trainer_runs import REPO, check, final_params, launch, max_rel_diff, trainer_args

from trainer.launch_contract import DISK_FULL_EXIT, HOST_ENV
from trainer.run_layout import RunLayout

pytestmark = pytest.mark.slow

FLAGS = ("--samples", "256", "--global-batch", "32", "--steps", "20", "--seed", "7",
         "--lr", "0.02", "--momentum", "0.9", "--checkpoint-every", "0")
STEP = 6
"""The step at whose end h2 ends and rank 0 falls a step behind h1."""
ENTRY = Path(__file__).resolve().parents[1] / "lost_step_rank.py"


@dataclass
class FaultRanks(LiveRun):
    """A ``LiveRun`` whose ranks start through ``lost_step_rank.py``, with each host's faults
    (environment variables) in ``faults``."""

    faults: dict[str, dict[str, str]] = field(default_factory=dict)

    def _start(self, env: dict[str, str], flags: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        args = trainer_args(*self.flags, *flags, "--run-dir", str(self.run_dir))
        assert args[:2] == ["-m", "trainer"]
        env = {**env, **self.faults.get(env[HOST_ENV], {})}
        launch_count.note("lone rank")  # as a rank started with ``-m trainer`` counts
        with open(self.run_dir / f"out-{len(self.ranks)}.log", "wb") as log:
            return subprocess.Popen([sys.executable, str(ENTRY), *args[2:]], cwd=REPO, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)


def test_the_state_a_survivor_sends_a_rank_0_a_step_behind_is_its_own(tmp_path: Path) -> None:
    live = tmp_path / "live"
    run = FaultRanks(live, (*FLAGS, "--split", "12,10,10"), ("h0", "h1", "h2"), faults={
        "h2": {FULL_AT: str(STEP)},
        "h0": {CUT_AT: str(STEP), CUT_AFTER_END_OF: RunLayout(live).events(2)}})
    try:
        run.start()
        run.killed.append(run.ranks[2])  # it ends on the full disk: no failure of the run
        run.finish(timeout=600)
    finally:
        run.stop_all()
    assert run.ranks[2].returncode == DISK_FULL_EXIT, run.output()
    (lost,) = [e for e in run.membership() if e["change"] == "left"]
    assert lost["hosts"] == ["h2"] and lost["cause"] == "ranks_died"
    assert "disk full on h2" in lost["said"]
    # h1 completed step STEP, rank 0 did not: h1's state went to rank 0.
    assert lost["step"] == STEP and lost["redone_steps"] == 1 and lost["state_bytes"] > 0
    alone = tmp_path / "alone"
    check(launch(1, *FLAGS, "--run-dir", str(alone)))
    assert max_rel_diff(final_params(alone), final_params(live)) <= 1e-6
