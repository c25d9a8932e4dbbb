"""The plain-DDP helper under live membership: a user's DDP script (no line more than the
helper's) loses a host and gains one while it trains, in the survivors' own processes, and ends
on the parameters of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from membership_runs import ScriptRanks, pid_of

pytestmark = pytest.mark.slow

ARGS = ("--epochs", "6", "--pause", "0.4")


def _model(path: Path) -> list[torch.Tensor]:
    return list(torch.load(path, weights_only=True).values())


def test_a_ddp_script_loses_the_middle_host_and_gains_one_live_and_ends_exact(
        tmp_path: Path) -> None:
    alone = ScriptRanks(tmp_path / "alone", ARGS[:2], ("h0",), store_port=0)
    alone.run_dir.mkdir(parents=True)
    env = alone._env("h0", 0, 1)
    env.pop("CORRAL_MEMBERSHIP_PORT")
    alone.ranks.append(alone._start(env))
    alone.finish()
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
    total = 6 * 20
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
    ours = _model(run.run_dir / "cwd" / "h0" / "model.pt")
    reference = _model(alone.run_dir / "cwd" / "h0" / "model.pt")
    diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(ours, reference,
                                                                         strict=True))
    assert diff <= 1e-6, diff
