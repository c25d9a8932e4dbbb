"""Live membership (trainer/membership/): hosts join and leave a running run at step
boundaries, asked, lost or refused, and the survivors go on in the same processes with the
parameters of one uninterrupted process."""

from __future__ import annotations

from pathlib import Path

import pytest
from membership_runs import live_run, pid_of
from trainer_runs import check, final_params, launch, max_rel_diff

pytestmark = pytest.mark.slow

FLAGS = ("--samples", "256", "--global-batch", "32", "--steps", "60", "--seed", "7",
         "--lr", "0.02", "--momentum", "0.9",  # momentum: the optimizer's state carried too
         "--checkpoint-every", "0")
SLOW = ("--slowdown", "3")
"""Steps long enough (an emulated slowdown, which changes no number) for changes mid-run."""
PREFETCH = ("--prefetch", "on")
"""Batches read a step ahead, as a CUDA rank reads them by default: a change of membership moves
ranks, and what was read ahead for the old place must not be trained on."""


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted process's run of ``FLAGS`` (one launch for the module's tests)."""
    run_dir = tmp_path_factory.mktemp("alone")
    check(launch(1, *FLAGS, "--run-dir", str(run_dir)))
    return run_dir


def test_a_join_a_leave_a_kill_and_refusals_end_with_one_process_parameters(
        tmp_path: Path, alone: Path) -> None:
    with live_run(tmp_path / "live", (*FLAGS, *SLOW, *PREFETCH, "--split", "12,10,10"),
                  ("h0", "h1", "h2")) as run:
        run.join("h3")
        run.join("h9", "--seed", "8")  # another run's settings: refused, the run untouched
        run.ask_leave("h0")  # the master's host: refused
        changes = run.membership
        run.wait_for("h3 joined", lambda: any(e["change"] == "joined" for e in changes()))
        run.ask_leave("h3")
        run.wait_for("h3 left", lambda: any(e.get("cause") == "asked" for e in changes()))
        run.kill(2)  # h2's rank, mid-step
        run.wait_for("h2 lost", lambda: any(e.get("cause") == "ranks_died" for e in changes()))
        run.finish(expect_failed=[run.joiners[1]])
        by = {(e["change"], e.get("cause"), tuple(e["hosts"])): e for e in changes()}
        joined = [e for e in changes() if e["change"] == "joined"]
        assert [e["hosts"] for e in joined] == [["h3"]]
        assert joined[0]["state_bytes"] > 0 and joined[0]["members"][-1] == 3
        start = run.events(3)[0]  # the joiner's start says the step it joined at
        assert start["event"] == "start" and start["step"] == joined[0]["step"] > 0
        lost = by[("left", "ranks_died", ("h2",))]
        assert lost["redone_steps"] == 1 and 2 not in lost["members"]
        assert "connections closed" in lost["reason"]  # known at once, not after STALE_S
        assert by[("left", "asked", ("h3",))]["redone_steps"] == 0
        assert "run's own settings" in by[("refused", None, ("h9",))]["reason"]
        assert "master" in by[("refused", None, ("h0",))]["reason"]
        generations = [e["generation"] for e in changes() if e["change"] != "refused"]
        assert generations == list(range(1, len(generations) + 1))
        # The leaver ended cleanly, saying so; the survivors ran on in their first processes.
        assert run.events(3)[-1]["status"] == "left"
        for member in (0, 1):
            assert pid_of(run.events(member)) == [run.ranks[member].pid]
            steps = [e["step"] for e in run.events(member) if e["event"] == "step"]
            assert steps == list(range(1, 61))  # each step once: the lost one redone
        assert max_rel_diff(final_params(alone), final_params(run.run_dir)) <= 1e-6


def test_a_sharded_run_re_slices_its_state_live_on_a_join_and_a_planned_leave(
        tmp_path: Path, alone: Path) -> None:
    # Budgets 1:2 and a joiner's 3: each change cuts the optimizer state anew, the leaver's
    # slice moved to the others, the joiner given one; one process's parameters at the end.
    sharded = ("--shard-state", "gradients", "--state-budget", "1,2")
    with live_run(tmp_path / "live", (*FLAGS, *SLOW, *sharded, "--split", "20,12"),
                  ("h0", "h1")) as run:
        run.join("h2", "--state-budget", "3")
        changes = run.membership
        run.wait_for("h2 joined", lambda: any(e["change"] == "joined" for e in changes()))
        run.ask_leave("h1")
        run.wait_for("h1 left", lambda: any(e.get("cause") == "asked" for e in changes()))
        run.finish()
        assert [(e["change"], e["hosts"]) for e in changes()] == [("joined", ["h2"]),
                                                                  ("left", ["h1"])]
        # The leaver is the middle of three: its slice lay between two survivors' slices.
        assert [e["members"] for e in changes()] == [[0, 1, 2], [0, 2]]
        assert run.events(1)[-1]["status"] == "left"
        for member in (0, 2):  # each slice's owner stepped to the end
            assert max(e["step"] for e in run.events(member) if e["event"] == "step") == 60
        assert max_rel_diff(final_params(alone), final_params(run.run_dir)) <= 1e-6
