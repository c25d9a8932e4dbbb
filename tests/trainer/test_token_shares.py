"""Token-balanced shares: with variable-length items under a balancing policy, the split is
each rank's share of the step's tokens. The ranks still take consecutive slices of the same
global batch in the same order, so any split gives the parameters of one process."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from lm_fixtures import TinyLM, make_tiny_lm
from trainer_runs import check, events, final_params, launch, max_rel_diff, of_kind

from trainer.step.batch_order import GlobalBatchOrder, token_shares

LENGTHS = [random.Random(4).randint(10, 200) for _ in range(240)]
"""Item lengths in tokens, 10 to 200."""


@pytest.mark.parametrize("split", [(8, 8, 8), (4, 8, 12), (2, 7, 15), (0, 12, 12)])
def test_token_cuts_take_the_global_batch_in_order_and_follow_the_token_shares(
        split: tuple[int, ...]) -> None:
    order = GlobalBatchOrder(len(LENGTHS), 24, seed=3, item_tokens=LENGTHS)
    by_count = GlobalBatchOrder(len(LENGTHS), 24, seed=3)
    for step in range(1, 11):
        parts = [order.local_indices(step, split, r) for r in range(len(split))]
        assert torch.equal(torch.cat(parts), by_count.global_indices(step))  # same items
        tokens = order.rank_tokens(step, split)
        assert tokens == [sum(LENGTHS[i] for i in p.tolist()) for p in parts]
        assert order.counts(step, split) == [len(p) for p in parts]
        total, longest = sum(tokens), max(LENGTHS)
        bound = 0
        for rank, share in enumerate(split):  # each cut is the item boundary nearest its target
            bound += share
            reached = sum(tokens[: rank + 1])
            assert abs(reached - total * bound / 24) <= longest / 2 + 1e-9
    assert token_shares([100, 200, 300], 24) == [4, 8, 12]


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


@pytest.mark.slow
@pytest.mark.serial  # the shares follow measured speeds (tests/tiers.py)
def test_dynamic_token_shares_follow_the_speeds_and_equal_one_process(
        lm: TinyLM, tmp_path: Path) -> None:
    data = tmp_path / "varlen.jsonl"
    _write_varlen(data)
    flags = ["--task", "causal_lm", "--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.2",
             "--seed", "7", "--global-batch", "24", "--steps", "40"]
    for option in (f"model={lm.model}", f"data={data}", "seq_len=256", "lora_r=4",
                   "lora_alpha=8", "packing=false", "samples=0"):
        flags += ["--task-option", option]
    check(launch(1, *flags, "--split", "24", "--run-dir", str(tmp_path / "one")))
    # Speeds 1:2:3 (emulated), the dynamic balancer from an equal split.
    check(launch(3, *flags, "--policy", "dynamic", "--split", "8,8,8", "--rebalance-every",
                 "5", "--slowdown", "3,1.5,1", "--run-dir", str(tmp_path / "three")))
    assert max_rel_diff(final_params(tmp_path / "one"), final_params(tmp_path / "three")) <= 1e-5
    steps = [of_kind(events(tmp_path / "three", r), "step") for r in range(3)]
    one = of_kind(events(tmp_path / "one", 0), "step")
    for step in range(40):  # every step's tokens are the global batch's, shared out
        # A text of n tokens has n - 1 targets: the tokens are the targets plus one per item.
        assert sum(steps[r][step]["tokens"] for r in range(3)) == one[step]["loss_units"] + 24
    settled = [sum(steps[r][s]["tokens"] for s in range(20, 40)) for r in range(3)]
    fractions = [t / sum(settled) for t in settled]
    assert fractions[0] < fractions[1] < fractions[2]  # the faster rank computes more tokens
    assert abs(fractions[2] - 0.5) <= 0.05  # the fastest: within 10 % of its 3/6


def test_the_reducer_and_report_show_tokens_per_rank() -> None:
    from types import SimpleNamespace

    from rich.console import Console

    from console.report import ranks_table
    from remote.records.reducer import RunFigures
    from remote.records.summary import RankSummary
    from trainer.events import StepEvent

    figures = RunFigures()
    for step, tokens in ((1, (300, 900)), (2, (500, 1100))):
        for rank, count in enumerate(tokens):
            figures.observe(StepEvent(t=float(step), rank=rank, step=step, epoch=0,
                                      local_batch=4, loss=1.0, compute_s=0.1, step_s=0.2,
                                      samples_per_s=20.0, tokens=count))
    assert [figures.ranks[r].mean_tokens_per_step for r in (0, 1)] == [400.0, 1000.0]
    ranks = [RankSummary(rank=r, host="h", device="cpu", mean_samples_per_s=20.0,
                         utilisation=0.5, final_share=0.5,
                         tokens_per_step=figures.ranks[r].mean_tokens_per_step) for r in (0, 1)]
    console = Console(width=120, record=True)
    console.print(ranks_table(SimpleNamespace(ranks=ranks)))  # type: ignore[arg-type]
    text = console.export_text()
    assert "tokens/step" in text
    assert [line.split()[-2] for line in text.splitlines() if " cpu " in line] == ["400", "1000"]
