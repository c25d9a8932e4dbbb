"""The plain-DDP helper under live membership: a user's DDP script (no line more than the
helper's) loses a host and gains one while it trains, in the survivors' own processes, and ends
on the parameters of an uninterrupted run. Any host but the master's can go: the middle one
(its successor moves down a rank), the first after the master and the last (``ends``: both in
one run, one after the other). One uninterrupted run (``alone``, one process) is the reference
of every scenario."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from membership_runs import ScriptRanks, pid_of

pytestmark = pytest.mark.slow

ARGS = ("--epochs", "6", "--pause", "0.4")


TOTAL = 6 * 20
"""Steps of a run of ``ARGS``: 480 samples, a global batch of 24, six epochs."""


def _model(path: Path) -> list[torch.Tensor]:
    return list(torch.load(path, weights_only=True).values())


def _distance(run: ScriptRanks, reference: Path) -> float:
    """The largest relative difference of ``run``'s saved parameters from ``reference``'s."""
    ours = _model(run.run_dir / "cwd" / "h0" / "model.pt")
    theirs = _model(reference / "cwd" / "h0" / "model.pt")
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(ours, theirs,
                                                                         strict=True))


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted reference: the script in one process, no membership (its folder)."""
    ref = ScriptRanks(tmp_path_factory.mktemp("alone"), ARGS[:2], ("h0",), store_port=0)
    ref.run_dir.mkdir(parents=True, exist_ok=True)
    env = ref._env("h0", 0, 1)
    env.pop("CORRAL_MEMBERSHIP_PORT")
    ref.ranks.append(ref._start(env))
    ref.finish()
    return ref.run_dir


@pytest.fixture(scope="module")
def ends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptRanks]:
    """Four hosts; the first after the master (h1) leaves at step 4, then the last (h3)."""
    run = ScriptRanks(tmp_path_factory.mktemp("ends"), ARGS, ("h0", "h1", "h2", "h3"))
    try:
        run.start()
        run.wait_for("step 4", lambda: run.steps_done() >= 4)
        run.ask_leave("h1")
        run.wait_for("h1 left", lambda: len(run.membership()) >= 1)
        run.ask_leave("h3")
        run.wait_for("h3 left", lambda: len(run.membership()) >= 2)
        run.finish()
        yield run
    finally:
        run.stop_all()


def test_a_ddp_script_loses_its_first_worker_host_then_its_last_live(
        ends: ScriptRanks) -> None:
    first, last = ends.membership()
    assert (first["change"], first["hosts"], first["cause"]) == ("left", ["h1"], "asked")
    assert first["members"] == [0, 2, 3]
    assert (last["change"], last["hosts"], last["cause"]) == ("left", ["h3"], "asked")
    assert last["members"] == [0, 2] and first["step"] < last["step"]
    for member in (1, 3):
        assert ends.events(member)[-1]["status"] == "left"
    for member in (0, 2):  # the survivors: one process each, every step once, none skipped
        assert pid_of(ends.events(member)) == [ends.ranks[member].pid]
        steps = [e["step"] for e in ends.events(member) if e["event"] == "step"]
        assert steps == list(range(1, TOTAL + 1))
    # h2 is rank 2 of 4, then rank 1 of 3 and of 2: its events keep its member id throughout
    assert {e["rank"] for e in ends.events(2)} == {2}
    for step in (1, first["step"] + 1, last["step"] + 1, TOTAL):
        shares = [e["local_batch"] for m in range(4) for e in ends.events(m)
                  if e["event"] == "step" and e["step"] == step]
        assert sum(shares) == 24, (step, shares)


def test_a_ddp_script_that_lost_its_ends_equals_one_process(
        ends: ScriptRanks, alone: Path) -> None:
    assert (diff := _distance(ends, alone)) <= 1e-6, diff


def test_a_ddp_script_loses_the_middle_host_and_gains_one_live_and_ends_exact(
        tmp_path: Path, alone: Path) -> None:
    run = ScriptRanks(tmp_path / "live", ARGS, ("h0", "h1", "h2"))
    try:
        run.start()
        changes = run.membership
        run.wait_for("step 4", lambda: run.steps_done() >= 4)
        run.ask_leave("h1")  # the middle host: h2's rank moves to rank 1
        run.join("h3")  # let in at its first step, after its start: after the leave
        run.wait_for("h1 left", lambda: any(e["change"] == "left" for e in changes()))
        run.wait_for("h3 joined", lambda: any(e["change"] == "joined" for e in changes()))
        run.finish()
    finally:
        run.stop_all()
    left, joined = (next(e for e in changes() if e["change"] == c) for c in ("left", "joined"))
    assert left["hosts"] == ["h1"] and left["cause"] == "asked" and left["members"] == [0, 2]
    assert joined["hosts"] == ["h3"] and joined["members"] == [0, 2, 3]
    assert joined["state_bytes"] > 0 and joined["seconds_to_step"] is not None
    assert left["step"] < joined["step"]
    total = TOTAL
    for member in (0, 2):  # the survivors: one process each, every step once, none skipped
        assert pid_of(run.events(member)) == [run.ranks[member].pid]
        steps = [e["step"] for e in run.events(member) if e["event"] == "step"]
        assert steps == list(range(1, total + 1))
    assert run.events(1)[-1]["status"] == "left"
    joiner_steps = [e["step"] for e in run.events(3) if e["event"] == "step"]
    assert joiner_steps == list(range(joined["step"] + 1, total + 1))
    # every sample of every step once: each step's shares add up to the global batch
    for step in (left["step"] + 1, joined["step"] + 1, total):
        shares = [e["local_batch"] for m in (0, 1, 2, 3) for e in run.events(m)
                  if e["event"] == "step" and e["step"] == step]
        assert sum(shares) == 24, (step, shares)
    assert (diff := _distance(run, alone)) <= 1e-6, diff
