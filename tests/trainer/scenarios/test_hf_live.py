"""The Hugging Face opt-in under live membership: a user's HF Trainer script (no line more than
the opt-in's two) gains a host, then loses its first host after the master and its last while
it trains, in the survivors' own processes, and ends on the parameters of one process trained
on the same batches (the same global batch of 12: 6 a device on one process); a TRL
``SFTTrainer`` script gains a host and loses its middle one the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from membership_runs import ScriptRanks, pid_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "hf_live_script.py"
EPOCHS = 8
STEPS = EPOCHS * 8
"""Epochs of 96 samples in global batches of 12 (2 a device x 3 ranks x 2 rounds)."""


def _model(path: Path) -> dict[str, torch.Tensor]:
    return dict(torch.load(path, weights_only=True))


def test_an_hf_trainer_script_gains_a_host_then_loses_its_first_worker_and_its_last_live(
        tmp_path: Path) -> None:
    alone = ScriptRanks(tmp_path / "alone", ("--batch-size", "6", "--epochs", str(EPOCHS)),
                        ("h0",), store_port=0, script=SCRIPT)
    alone.run_dir.mkdir(parents=True)
    env = alone._env("h0", 0, 1)
    env.pop("CORRAL_MEMBERSHIP_PORT")
    alone.ranks.append(alone._start(env))
    run = ScriptRanks(tmp_path / "live", ("--batch-size", "2", "--epochs", str(EPOCHS),
                                          "--pause", "0.5"), ("h0", "h1", "h2"), script=SCRIPT)
    try:
        run.start()
        run.join("h3")  # started with the others (a Trainer's start is long on a loaded
        # machine): let in at the first step boundary after its Trainer is built
        changes = run.membership
        run.wait_for("h3 joined", lambda: any(e["change"] == "joined" for e in changes()),
                     timeout=600)
        run.ask_leave("h1")  # the first host after the master: h2's and h3's ranks move down
        left = lambda: [e for e in changes() if e["change"] == "left"]  # noqa: E731
        run.wait_for("h1 left", lambda: len(left()) == 1)
        run.ask_leave("h3")  # then the last host (the joiner)
        run.wait_for("h3 left", lambda: len(left()) == 2)
        run.finish()
        alone.finish()
    finally:
        run.stop_all()
        alone.stop_all()
    joined = next(e for e in changes() if e["change"] == "joined")
    first, last = left()
    assert joined["hosts"] == ["h3"] and joined["members"] == [0, 1, 2, 3]
    assert first["hosts"] == ["h1"] and first["cause"] == "asked"
    assert first["members"] == [0, 2, 3]
    assert last["hosts"] == ["h3"] and last["cause"] == "asked" and last["members"] == [0, 2]
    assert joined["state_bytes"] > 0 and joined["step"] < first["step"] < last["step"] < STEPS
    for member in (0, 2):  # the survivors: one process each, every step once, none skipped
        assert pid_of(run.events(member)) == [run.ranks[member].pid]
        steps = [e["step"] for e in run.events(member) if e["event"] == "step"]
        assert steps == list(range(1, STEPS + 1))
    assert run.events(1)[-1]["status"] == run.events(3)[-1]["status"] == "left"
    joiner_steps = [e["step"] for e in run.events(3) if e["event"] == "step"]
    assert joiner_steps == list(range(joined["step"] + 1, last["step"] + 1))
    # h2 is rank 2 of 4, then rank 1 of 3 and of 2: its events keep its member id throughout
    assert {e["rank"] for e in run.events(2)} == {2}
    for step in (joined["step"] + 1, first["step"] + 1, last["step"] + 1, STEPS):
        shares = [e["local_batch"] for m in (0, 1, 2, 3) for e in run.events(m)
                  if e["event"] == "step" and e["step"] == step]
        assert sum(shares) == 12, (step, shares)  # every sample once a step
    ours = _model(run.run_dir / "cwd" / "h0" / "model.pt")
    reference = _model(alone.run_dir / "cwd" / "h0" / "model.pt")
    diff = max(float((ours[k] - b).abs().max() / b.abs().max()) for k, b in reference.items())
    # The HF opt-in's bound (docs/scripts.md "What is exact"), not the DDP helper's 1e-6: each
    # rank's loss is its token sum / the step's tokens x processes, rounded per rank and
    # group, and 64 steps of SGD at lr 0.3 grow that rounding (measured 1.6e-6; 2.1e-6 with no
    # change at all); a skipped or repeated sample, or a step on the wrong scale, is off by
    # orders of magnitude more.
    assert diff <= 1e-5, diff


def test_a_trl_sft_script_gains_a_host_and_loses_the_middle_one_live_and_ends_exact(
        tmp_path: Path) -> None:
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    from trainer.tiny_lm import write_pairs, write_tiny_lm

    write_tiny_lm(tmp_path / "lm", seed=0, shape=None)
    write_pairs(tmp_path / "pairs.jsonl")
    script = Path(__file__).parents[3] / "examples" / "scripts" / "trl_sft.py"

    def args(per_device: int) -> tuple[str, ...]:
        return ("--model", str(tmp_path / "lm"), "--data", str(tmp_path / "pairs.jsonl"),
                "--out", "out", "--batch-size", str(per_device), "--steps", "60", "--cpu",
                "--optim", "sgd", "--lr", "0.5")

    alone = ScriptRanks(tmp_path / "alone", args(9), ("h0",), store_port=0, script=script)
    alone.run_dir.mkdir(parents=True)
    env = alone._env("h0", 0, 1)
    env.pop("CORRAL_MEMBERSHIP_PORT")
    alone.ranks.append(alone._start(env))
    # each step slowed (CORRAL_SLOWDOWN: a sleep after its compute), so that the joiner,
    # started with the others, is let in well before the end on a loaded machine
    run = ScriptRanks(tmp_path / "live", args(3), ("h0", "h1", "h2"), script=script,
                      env={"CORRAL_SLOWDOWN": "15"})
    try:
        run.start()
        run.join("h3")
        changes = run.membership
        run.wait_for("h3 joined", lambda: any(e["change"] == "joined" for e in changes()),
                     timeout=600)
        run.ask_leave("h1")
        run.wait_for("h1 left", lambda: any(e["change"] == "left" for e in changes()))
        run.finish()
        alone.finish()
    finally:
        run.stop_all()
        alone.stop_all()
    joined, left = (next(e for e in changes() if e["change"] == c) for c in ("joined", "left"))
    assert joined["hosts"] == ["h3"] and joined["members"] == [0, 1, 2, 3]
    assert left["hosts"] == ["h1"] and left["members"] == [0, 2, 3]
    assert joined["state_bytes"] > 0 and joined["step"] < left["step"] < 60
    for member in (0, 2):
        assert pid_of(run.events(member)) == [run.ranks[member].pid]
        steps = [e["step"] for e in run.events(member) if e["event"] == "step"]
        assert steps == list(range(1, 61))
    joiner_steps = [e["step"] for e in run.events(3) if e["event"] == "step"]
    assert joiner_steps == list(range(joined["step"] + 1, 61))
    for step in (joined["step"] + 1, left["step"] + 1, 60):  # every sample once a step
        shares = [e["local_batch"] for m in range(4) for e in run.events(m)
                  if e["event"] == "step" and e["step"] == step]
        assert sum(shares) == 9, (step, shares)
    ours = load_file(str(run.run_dir / "cwd" / "h0" / "out" / "final" /
                         "adapter_model.safetensors"))
    reference = load_file(str(alone.run_dir / "cwd" / "h0" / "out" / "final" /
                              "adapter_model.safetensors"))
    diff = max(float((ours[k] - b).abs().max() / b.abs().max()) for k, b in reference.items())
    assert diff <= 1e-5, diff  # the HF opt-in's bound (above); measured 7.0e-7
