"""Token-balanced shares: with variable-length items under a balancing policy, the split is
each rank's share of the step's tokens. The ranks still take consecutive slices of the same
global batch in the same order, so any split gives the parameters of one process."""

from __future__ import annotations

import random
from itertools import combinations

import pytest
import torch

from trainer.step.batch_order import GlobalBatchOrder, share_seconds, slice_tokens

LENGTHS = [random.Random(4).randint(10, 200) for _ in range(240)]
"""Item lengths in tokens, 10 to 200."""


def _best_ratio(sizes: list[int], split: tuple[int, ...], padded: bool) -> float:
    """The least largest compute/share over every way to cut ``sizes`` into three slices."""
    best = float("inf")
    for first, second in combinations(range(len(sizes) + 1), 2):
        parts = (sizes[:first], sizes[first:second], sizes[second:])
        if any(part and not share for part, share in zip(parts, split, strict=True)):
            continue
        best = min(best, max(slice_tokens(part, padded) / share
                             for part, share in zip(parts, split, strict=True) if share))
    return best


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("split", [(8, 8, 8), (4, 8, 12), (2, 7, 15), (0, 12, 12)])
def test_token_cuts_take_the_global_batch_in_order_and_make_the_slowest_rank_fastest(
        split: tuple[int, ...], padded: bool) -> None:
    order = GlobalBatchOrder(len(LENGTHS), 24, seed=3, item_tokens=LENGTHS, padded=padded)
    by_count = GlobalBatchOrder(len(LENGTHS), 24, seed=3)
    for step in range(1, 11):
        parts = [order.local_indices(step, split, r) for r in range(len(split))]
        assert torch.equal(torch.cat(parts), by_count.global_indices(step))  # same items
        sizes = [[LENGTHS[i] for i in p.tolist()] for p in parts]
        tokens = order.rank_tokens(step, split)
        # Padded: a slice computes its items times its longest; else the sum of its items.
        assert tokens == [(len(z) * max(z) if padded else sum(z)) if z else 0 for z in sizes]
        assert order.counts(step, split) == [len(p) for p in parts]
        # A rank's time is its tokens over its share (its speed): no cut has a faster slowest.
        slowest = max(t / share for t, share in zip(tokens, split, strict=True) if share)
        global_sizes = [LENGTHS[i] for i in by_count.global_indices(step).tolist()]
        assert slowest == pytest.approx(_best_ratio(global_sizes, split, padded))
    # The balancer sees each rank's time for exactly its share: a rank that got 300 tokens
    # for a share of 200 in 0.3 s would have taken 0.2 s.
    seconds = share_seconds([0.1, 0.3, 0.3, 0.0], [100, 300, 200, 0], [4, 8, 12, 0])
    assert seconds == pytest.approx([0.1, 0.2, 0.45, 0.0])
"""Steps of the run, and the first step counted as settled."""
"""How much longer the slowest rank's settled compute may take than that of a split
proportional to the measured speeds (see the test below)."""


def test_the_reducer_and_report_show_tokens_per_rank() -> None:
    from types import SimpleNamespace

    from rich.console import Console

    from console.report import ranks_table
    from figures.reducer import RunFigures
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
