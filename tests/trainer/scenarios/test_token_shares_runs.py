"""The runs (slow tier) of what ``tests/trainer/test_token_shares.py`` tests: token-balanced
shares: with variable-length items under a balancing policy, the split is each rank's share of
the step's tokens."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from lm_fixtures import TinyLM, make_tiny_lm
from trainer_runs import check, events, final_params, launch, max_rel_diff, of_kind


def _write_varlen(path: Path) -> None:
    rng = random.Random(5)
    words = ("red", "blue", "cat", "river", "seven", "stone", "quiet", "song")
    with path.open("w") as f:
        for length in (rng.randint(10, 200) for _ in range(240)):
            text = ""
            while len(text) < length:
                text += rng.choice(words) + " "
            f.write(json.dumps({"text": text[: length - 2]}) + "\n")  # + BOS + EOS


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> TinyLM:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


STEPS, SETTLED = 30, 15


SETTLED_TOLERANCE = 0.2


@pytest.mark.slow
@pytest.mark.serial  # the shares follow measured speeds (tests/tiers.py)
def test_dynamic_token_shares_follow_the_speeds_and_equal_one_process(
        lm: TinyLM, tmp_path: Path) -> None:
    data = tmp_path / "varlen.jsonl"
    _write_varlen(data)
    flags = ["--task", "causal_lm", "--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.2",
             "--seed", "7", "--global-batch", "96", "--steps", str(STEPS)]
    for option in (f"model={lm.model}", f"data={data}", "seq_len=256", "lora_r=4",
                   "lora_alpha=8", "packing=false", "samples=0"):
        flags += ["--task-option", option]
    check(launch(1, *flags, "--split", "96", "--run-dir", str(tmp_path / "one"), threads=None))
    # Speeds 1:2:3, emulated on every rank (6, 3 and 2 times slower) so that the emulated
    # time dominates the real one; the dynamic balancer from an equal split.
    check(launch(3, *flags, "--policy", "dynamic", "--split", "32,32,32", "--rebalance-every",
                 "5", "--slowdown", "6,3,2", "--run-dir", str(tmp_path / "three")))
    assert max_rel_diff(final_params(tmp_path / "one"), final_params(tmp_path / "three")) <= 1e-5
    steps = [of_kind(events(tmp_path / "three", r), "step") for r in range(3)]
    one = of_kind(events(tmp_path / "one", 0), "step")
    for step in range(STEPS):  # every step's global batch is shared out, none twice
        assert sum(steps[r][step]["loss_units"] for r in range(3)) == one[step]["loss_units"]
    # After the balancer settled, the ranks' compute takes about as long on each: the slowest
    # rank's compute seconds are those of a split exactly proportional to the speeds measured
    # (tokens per compute second), within SETTLED_TOLERANCE. That is the throughput at stake;
    # the equal split it starts from costs 2 times. The balancer stops moving once the gain it
    # predicts is inside its dead-band (its threshold plus the noise it measures), which widens
    # on a busy machine (what CI's machine and this VM left: docs/benchmarks/ci-time.md "The
    # edit-test loop
    # on two workers, and a throughput verdict CI's machine missed").
    settled = [steps[r][SETTLED:] for r in range(3)]
    tokens = [sum(e["tokens"] for e in settled[r]) for r in range(3)]
    seconds = [sum(e["compute_s"] for e in settled[r]) for r in range(3)]
    speeds = [tokens[r] / seconds[r] for r in range(3)]
    fractions = [t / sum(tokens) for t in tokens]
    proportional_seconds = sum(tokens) / sum(speeds)
    assert max(seconds) <= (1 + SETTLED_TOLERANCE) * proportional_seconds, (
        seconds, proportional_seconds, fractions)
    # Each rank's tokens (its compute, padding included) follow the emulated speeds 1:2:3: in
    # their order, and the slowest and the fastest rank more than half way from the equal
    # split's third to their speeds' shares, 1/6 and 1/2. Not exactly there: inside the
    # dead-band the split may stop short or go past.
    for rank, share in ((0, 1 / 6), (2, 1 / 2)):
        assert abs(fractions[rank] - share) < abs(1 / 3 - share) / 2, (fractions, speeds)
    assert fractions[0] < fractions[1] < fractions[2], (fractions, speeds)
