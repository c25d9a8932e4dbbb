"""Islands joining and leaving a low-communication run at a round's end (live membership with
``--exchange local``, trainer/lowcomm/islands.py): one run with a join, a planned leave and a
killed island, whose survivors keep their processes, and whose parameters equal those of a
run given the same islands per round from the start (``--island-schedule``, the replay)."""

from __future__ import annotations

from pathlib import Path

import pytest
from membership_runs import live_run, pid_of, schedule_of
from trainer_runs import check, final_params, launch, max_rel_diff

pytestmark = pytest.mark.slow

FLAGS = ("--exchange", "local", "--samples", "512", "--global-batch", "24", "--seed", "3",
         "--optimizer", "adamw", "--lr", "0.003", "--momentum", "0.9", "--round-steps", "2",
         "--steps", "120", "--checkpoint-every", "0", "--policy", "static")
"""Rounds of 2 inner steps per island, every island as fast as the others (static shares)."""
SLOW = ("--slowdown", "6")
"""Rounds long enough (an emulated slowdown, which changes no number) for changes mid-run."""
HOSTS = ("h0", "h1", "h2", "h3")
"""The live run's hosts; the replay's islands 0..3 are these, in this order."""


def test_an_island_joins_leaves_and_is_lost_and_the_replay_ends_equal(tmp_path: Path) -> None:
    with live_run(tmp_path / "live", (*FLAGS, *SLOW), HOSTS[:3]) as run:
        run.join("h3")
        changes = run.membership
        run.wait_for("h3 joined", lambda: any(e["change"] == "joined" for e in changes()))
        run.ask_leave("h2")
        run.wait_for("h2 left", lambda: any(e.get("cause") == "asked" for e in changes()))
        run.kill(1)  # h1's island, mid-round
        run.wait_for("h1 lost", lambda: any(e["hosts"] == ["h1"] for e in changes()))
        run.finish()
        rounds = [e for e in run.events(0) if e["event"] == "round"]
        # Every global batch once, in order, whatever the islands.
        assert [r["first_step"] for r in rounds] == [1] + [r["step"] + 1 for r in rounds[:-1]]
        assert rounds[-1]["step"] == 120
        sets = [tuple(r["island_hosts"]) for r in rounds]
        assert sets[0] == ("h0", "h1", "h2") and sets[-1] == ("h0", "h3")
        assert ("h0", "h1", "h2", "h3") in sets and ("h0", "h1", "h3") in sets
        joined = next(e for e in changes() if e["change"] == "joined")
        assert joined["state_bytes"] > 0 and joined["seconds_to_step"] is not None
        assert run.events(2)[-1]["status"] == "left"  # the leaver ended cleanly
        lost = next(e for e in changes() if e["hosts"] == ["h1"])
        assert lost["change"] == "left" and lost["cause"] in ("ranks_died", "unreachable")
        for member in (0, 3):  # the survivors ran on in their first processes
            assert len(pid_of(run.events(member))) == 1
        assert pid_of(run.events(0)) == [run.ranks[0].pid]
        schedule = schedule_of(rounds, HOSTS)
    replay = tmp_path / "replay"
    check(launch(4, *FLAGS, "--islands", "0,1,2,3", "--island-schedule", schedule,
                 "--run-dir", str(replay)))
    assert [r["island_hosts"] for r in rounds if r["dropped"]] in ([], [["h0", "h1", "h3"]])
    assert max_rel_diff(final_params(run.run_dir), final_params(replay)) <= 1e-6
