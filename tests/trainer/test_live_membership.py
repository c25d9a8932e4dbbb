"""Live membership (trainer/membership/): hosts leave a running run at step boundaries, asked
or lost, and the survivors go on in the same processes with the parameters of one process."""

from __future__ import annotations

from pathlib import Path

import pytest
from membership_runs import live_run, pid_of
from trainer_runs import check, final_params, launch, max_rel_diff

pytestmark = pytest.mark.slow

FLAGS = ("--samples", "256", "--global-batch", "32", "--steps", "24", "--seed", "7",
         "--lr", "0.05", "--momentum", "0.9",  # momentum: the optimizer's state carried too
         "--checkpoint-every", "0", "--slowdown", "2")
"""A tiny run whose steps last long enough (an emulated slowdown) for changes mid-run."""


def test_a_planned_leave_then_a_killed_host_end_with_one_process_parameters(
        tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    check(launch(1, *FLAGS, "--run-dir", str(alone)))
    with live_run(tmp_path / "live", (*FLAGS, "--split", "8,8,8,8"),
                  ("h0", "h1", "h2", "h3")) as run:
        run.wait_for("step 3", lambda: run.steps_done() >= 3)
        run.ask_leave("h3")
        run.wait_for("h3 left", lambda: len(run.membership()) >= 1)
        run.wait_for("a step after", lambda: run.steps_done() >= run.membership()[0]["step"] + 2)
        run.kill(2)  # h2's rank, mid-step
        run.wait_for("h2 lost", lambda: len(run.membership()) >= 2)
        run.ask_leave("h0")  # the master's host: refused, the run untouched
        run.finish()
        leave, lost, refused = run.membership()
        assert (leave["change"], leave["hosts"], leave["cause"]) == ("left", ["h3"], "asked")
        assert (leave["generation"], leave["world_size"], leave["redone_steps"]) == (1, 3, 0)
        assert (lost["change"], lost["hosts"], lost["cause"]) == ("left", ["h2"], "ranks_died")
        assert (lost["generation"], lost["members"], lost["redone_steps"]) == (2, [0, 1], 1)
        assert lost["seconds_to_step"] is not None and leave["seconds_to_step"] is not None
        assert (refused["change"], refused["hosts"]) == ("refused", ["h0"])
        assert "master" in refused["reason"]
        # The leaver ended cleanly, saying so; the survivors ran on in their first processes.
        assert run.events(3)[-1]["status"] == "left" and run.ranks[3].returncode == 0
        for member in (0, 1):
            assert pid_of(run.events(member)) == [run.ranks[member].pid]
            assert run.events(member)[-1]["status"] == "completed"
        steps = [e["step"] for e in run.events(1) if e["event"] == "step"]
        assert steps == sorted(set(steps)) and steps[-1] == 24  # the lost step redone once
        shares = [e["local_batch"] for e in run.events(0) if e["event"] == "step"]
        assert shares[0] == 8 and shares[-1] == 16  # the leavers' shares went to the others
        assert max_rel_diff(final_params(alone), final_params(run.run_dir)) <= 1e-6
