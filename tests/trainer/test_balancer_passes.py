"""The balancer's micro-batch time model: ceil(b/m) passes, shares of 0 only when faster."""

from __future__ import annotations

import pytest

from trainer.balance.balancer import Balancer, BalancerConfig
from trainer.balance.passes import PassCost, min_max_costs, passes, per_pass
from trainer.balance.solve import LinearFit


def test_a_share_costs_one_fixed_cost_per_pass() -> None:
    cost = PassCost(LinearFit(0.5, 0.01), micro=8)
    assert [passes(b, 8) for b in (0, 1, 8, 9, 16, 17)] == [0, 1, 1, 2, 2, 3]
    assert cost.seconds(0) == 0.0
    assert cost.seconds(8) == pytest.approx(0.5 + 0.08)
    assert cost.seconds(9) == pytest.approx(2 * 0.5 + 0.09)
    assert per_pass(20, 8) == 7 and per_pass(5, None) == 5


def test_passes_make_the_solver_prefer_whole_micro_batches() -> None:
    # Same speed per sample, but rank 0 pays 1 s per pass of 10: a share of 11 would cost it a
    # second pass. The linear model (one pass) would split 20,20; with passes rank 0 takes 10.
    costs = [PassCost(LinearFit(1.0, 0.01), micro=10), PassCost(LinearFit(0.0, 0.0375), None)]
    split = min_max_costs(costs, 40)
    assert split == (10, 30)
    assert max(c.seconds(b) for c, b in zip(costs, split, strict=True)) <= 1.13


def test_a_rank_gets_zero_only_when_that_is_faster() -> None:
    fast, slow = PassCost(LinearFit(0.01, 0.001), None), PassCost(LinearFit(2.0, 0.01), None)
    # One sample on the slow rank (2.01 s) costs more than the fast rank doing all 64 (0.074 s).
    assert min_max_costs([fast, slow], 64, min_batch=0) == (64, 0)
    # When the slow rank's fixed cost is small, it keeps a share.
    slowish = PassCost(LinearFit(0.01, 0.003), None)
    split = min_max_costs([fast, slowish], 64, min_batch=0)
    assert split[1] > 0 and sum(split) == 64


def test_dynamic_balancer_lets_a_hopeless_rank_sit_out_and_says_so() -> None:
    config = BalancerConfig(policy="dynamic", global_batch=64, world_size=2, rebalance_every=10,
                            allow_zero=True, threshold=0.0)
    balancer = Balancer(config, (32, 32))
    split, decisions = (32, 32), []
    for step in range(1, 301):
        times = (0.01 + 0.001 * split[0], (3.0 + 0.01 * split[1]) if split[1] else 0.0)
        balancer.observe(split, times)
        if step % 10 == 0 and (decision := balancer.decide(step)) is not None:
            split = decision.split
            decisions.append(decision)
    assert split == (64, 0)
    # ...in one move (a rank left with a sample would still pay the exchange), and why, in
    # numbers: rank 1's 3.32 s at 32 samples against 0.084 s for rank 0 doing all 64.
    assert len(decisions) == 1
    assert "rank 1 sits out: compute 3320.0 -> 84.0 ms" in decisions[0].reason
    # The same figures travel as numbers (the rebalance event's, the console's network view).
    assert decisions[0].compute_s == pytest.approx((3.32, 0.084))
    assert decisions[0].exchange_s is not None


def test_micro_batches_reach_the_fair_share_under_a_memory_cap() -> None:
    # Rank 0 is 3x faster but can only fit 8 per pass; the balancer works in per-pass times.
    config = BalancerConfig(policy="dynamic", global_batch=64, world_size=2, rebalance_every=5,
                            micro_batch=(8, None), max_move=1.0, threshold=0.0)
    balancer = Balancer(config, (32, 32))
    split = (32, 32)
    for step in range(1, 200):
        t0 = passes(split[0], 8) * 0.001 + 0.001 * split[0]
        t1 = 0.001 + 0.003 * split[1]
        balancer.observe(split, (t0, t1))
        if step % 5 == 0 and (decision := balancer.decide(step)) is not None:
            split = decision.split
    assert split[0] >= 44  # far beyond the cap of 8: the speed-fair share, in passes


def test_a_move_that_benches_a_rank_carries_the_cost_models_figures(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only a switch of active set: a move of samples that leaves a rank at 0 is a change
    of active set too, and its event carries the compute and exchange seconds before and after
    (the console's network view words a benched host by them, docs/events.md)."""
    monkeypatch.setattr(Balancer, "_switch_active", lambda *args: None)  # the move's path
    config = BalancerConfig(policy="dynamic", global_batch=64, world_size=2, rebalance_every=10,
                            allow_zero=True, threshold=0.0)
    balancer = Balancer(config, (32, 32))
    split, decisions = (32, 32), []
    for step in range(1, 301):
        times = (0.01 + 0.001 * split[0], (3.0 + 0.01 * split[1]) if split[1] else 0.0)
        balancer.observe(split, times)
        if step % 10 == 0 and (decision := balancer.decide(step)) is not None:
            split = decision.split
            decisions.append(decision)
    benching = [d for d in decisions if d.split[1] == 0 and d.previous[1] > 0]
    assert benching and "sit out (share 0)" in benching[0].reason
    before = benching[0].previous[1]  # the slow rank's time at its share, then rank 0's at 64
    assert benching[0].compute_s == pytest.approx((3.0 + 0.01 * before, 0.01 + 0.001 * 64))
    assert benching[0].exchange_s is not None
    moves = [d for d in decisions if (d.split[1] > 0) == (d.previous[1] > 0)]
    assert all(d.compute_s is None and d.exchange_s is None for d in moves)
