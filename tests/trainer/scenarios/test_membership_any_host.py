"""Any host but the master's can leave a live run (issue 78): the first after the master, one
in the middle, the last. Every survivor's rank, events and resource sampler follow the new
generation (a rank whose place moved down used to die 2-4 steps later writing a ``resources``
event under its old rank), and the one membership event says the leaver left as asked."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from membership_runs import live_run, pid_of
from trainer_runs import check, final_params, launch, max_rel_diff

from trainer.membership.contract import HOST_LOSS_ENV

pytestmark = pytest.mark.slow

STEPS = 40
FLAGS = ("--samples", "256", "--global-batch", "24", "--steps", str(STEPS), "--seed", "3",
         "--lr", "0.02", "--momentum", "0.9", "--checkpoint-every", "0")
LIVE = ("--slowdown", "3", "--resources-every", "0.05")
"""Steps long enough for a leave mid-run (an emulated slowdown changes no number), and a
resource sample at nearly every step: the events that used to carry a survivor's old rank."""


@pytest.mark.parametrize(("hosts", "leaver"), [
    (("h0", "h1", "h2"), "h1"),        # the first after the master (of three: the middle)
    (("h0", "h1", "h2", "h3"), "h2"),  # in the middle: a survivor after it moves down
    (("h0", "h1", "h2"), "h2"),        # the last
], ids=["first-after-master", "middle-of-four", "last"])
def test_a_host_leaves_from_any_place_and_the_survivors_run_on_exactly(
        hosts: tuple[str, ...], leaver: str, tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    check(launch(1, *FLAGS, "--run-dir", str(alone)))
    gone = hosts.index(leaver)
    with live_run(tmp_path / "live", (*FLAGS, *LIVE), hosts) as run:
        run.wait_for("step 5", lambda: run.steps_done() >= 5)
        run.ask_leave(leaver)
        run.wait_for(f"{leaver} left", lambda: bool(run.membership()))
        run.finish()  # every rank exits 0: the leaver and each survivor after it
        changes = [(e["change"], e.get("cause"), e["hosts"]) for e in run.membership()]
        assert changes == [("left", "asked", [leaver])]
        survivors = [m for m in range(len(hosts)) if m != gone]
        assert run.membership()[0]["members"] == survivors
        assert run.events(gone)[-1]["status"] == "left"
        for member in survivors:
            events = run.events(member)
            assert pid_of(events) == [run.ranks[member].pid]  # its first process throughout
            assert [e["step"] for e in events if e["event"] == "step"] == list(
                range(1, STEPS + 1))
            # Every event of this member's file carries its member id, samples too.
            assert {e["rank"] for e in events} == {member}
            assert any(e["event"] == "resources" for e in events)
        assert max_rel_diff(final_params(alone), final_params(run.run_dir)) <= 1e-6


def test_a_static_split_is_back_to_its_written_shares_when_the_host_rejoins(
        tmp_path: Path) -> None:
    # Before: the rejoined host kept the joiner's first share of 1 for good (split 14/15/1).
    # The run is stopped (SIGTERM, as `corral stop`) once the joiner trained a few steps,
    # however long its start took, and compared with one process of as many steps.
    flags = (*FLAGS, "--steps", "100000", *LIVE, "--policy", "static", "--split", "6,10,8")
    with live_run(tmp_path / "live", flags, ("h0", "h1", "h2")) as run:
        run.wait_for("step 3", lambda: run.steps_done() >= 3)
        run.ask_leave("h1")
        run.wait_for("h1 left", lambda: bool(run.membership()))
        run.join("h1")
        run.wait_for("h1 back", lambda: len(run.membership()) == 2, timeout=300)
        back = run.membership()[1]
        member = back["members"][-1]  # a new member id, on the host that left
        run.wait_for("the joiner's steps", lambda: run.steps_done(member) >= back["step"] + 3)
        for proc in (run.ranks[0], run.ranks[2], *run.joiners):
            run.kill_process(proc, signal.SIGTERM)
        run.finish()
        ends = {m: run.events(m)[-1] for m in (0, 2, member)}
        last = ends[0]["step"]
        assert {(e["event"], e["step"]) for e in ends.values()} == {("end", last)}, ends
        assert (back["change"], back["hosts"]) == ("joined", ["h1"])
        shares = {e["local_batch"] for e in run.events(member) if e["event"] == "step"}
        assert shares == {10}  # its written share from its first step on
        after = {e["local_batch"] for e in run.events(0)
                 if e["event"] == "step" and e["step"] > back["step"]}
        assert after == {6}
        alone = tmp_path / "alone"
        check(launch(1, *FLAGS, "--steps", str(last), "--run-dir", str(alone)))
        assert max_rel_diff(final_params(alone), final_params(run.run_dir)) <= 1e-6


def test_under_on_host_loss_stop_a_leave_stays_live_and_a_lost_host_fails_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # corral's default: live membership for planned changes, a host lost unplanned fails the
    # run (or restarts it under max_restarts) as it did before, never a silent carry-on.
    monkeypatch.setenv(HOST_LOSS_ENV, "stop")  # as corral's launch tells the ranks
    with live_run(tmp_path / "live", (*FLAGS, "--steps", "100000", *LIVE),
                  ("h0", "h1", "h2")) as run:
        run.wait_for("step 3", lambda: run.steps_done() >= 3)
        run.ask_leave("h2")
        run.wait_for("h2 left", lambda: bool(run.membership()))
        run.kill(1)
        run.finish(expect_failed=[run.ranks[0]])  # rank 0 fails with the loss; h2 exit 0
        assert [(e["change"], e.get("cause")) for e in run.membership()] == [("left", "asked")]
