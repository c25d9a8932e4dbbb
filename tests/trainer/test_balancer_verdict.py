"""Every balancer decision judged by the steps it measured (trainer/balance/verdict.py): a move
that made the step slower is undone and backed off, and the run never stays below a split it
measured recently. Pure Python over synthetic step times."""

from __future__ import annotations

import pytest

from trainer.balance.balancer import Balancer, BalancerConfig
from trainer.balance.verdict import AFTER_SETTLE, DecisionJudge

EVERY = 10


def _window(judge: DecisionJudge, split: tuple[int, ...], seconds: float,
            steps: int = EVERY) -> None:
    for _ in range(steps):
        judge.observe(split, seconds)


@pytest.mark.parametrize(
    ("case", "before_s", "after_s", "undone"),
    [
        ("faster after the move: kept", 1.0, 0.8, False),
        ("as fast, within the noise: kept", 1.0, 1.02, False),
        ("slower by more than the margin: undone", 1.0, 1.3, True),
    ],
)
def test_a_move_is_judged_by_the_steps_after_it(case: str, before_s: float, after_s: float,
                                                undone: bool) -> None:
    judge = DecisionJudge(EVERY)
    old, new = (32, 32), (41, 23)
    _window(judge, old, before_s)
    judge.start_trial(10, old, new, predicted_gain=0.2)
    _window(judge, new, after_s)
    verdict = judge.judge(new, margin=0.05, now=2)
    assert (verdict is not None) == undone, case
    if undone:
        assert verdict is not None and verdict.split == old
        assert "undoes step 10's move" in verdict.reason and "predicted +20%" in verdict.reason
        assert verdict.measured_gain == pytest.approx(1 - before_s / after_s)


def test_the_steps_right_after_a_change_are_not_measured() -> None:
    judge = DecisionJudge(EVERY)
    judge.start_trial(10, (32, 32), (41, 23), 0.1)
    for _ in range(AFTER_SETTLE):
        judge.observe((41, 23), 9.0)  # a new group made, a replica broadcast
    _window(judge, (41, 23), 1.0)
    assert judge.median_of((41, 23)) == (1.0, 0.0)


def test_a_noisy_machine_widens_the_margin() -> None:
    judge = DecisionJudge(EVERY)
    old, new = (32, 32), (41, 23)
    _window(judge, old, 1.0)
    judge.start_trial(10, old, new, 0.1)
    for i in range(EVERY):  # median 1.1, spread ±0.15: a 10 % difference is noise here
        judge.observe(new, 1.1 + (0.15 if i % 2 else -0.15) * (i % 3 != 0))
    assert judge.judge(new, margin=0.05, now=2) is None


def test_an_undone_change_backs_off_longer_each_time() -> None:
    judge = DecisionJudge(EVERY)
    old, benched = (32, 32), (64, 0)
    waits = []
    now = 0
    for _ in range(4):
        now += 1
        _window(judge, old, 1.0)
        judge.start_trial(now * EVERY, old, benched, 0.3)
        _window(judge, benched, 2.0)
        now += 1
        verdict = judge.judge(benched, 0.05, now)
        assert verdict is not None and verdict.split == old
        first_allowed = next(n for n in range(now, now + 40) if not judge.refuses(old, benched, n))
        waits.append(first_allowed - now)
        now = first_allowed - 1
    assert waits == [1, 2, 4, 8]
    # a move of shares in another direction is not refused meanwhile
    assert not judge.refuses(old, (30, 34), now)


def test_the_run_returns_to_a_faster_split_it_measured_recently() -> None:
    # Each move measured within the margin of the one before, but together they drift slower.
    judge = DecisionJudge(EVERY)
    steps = [((32, 32), 1.00), ((36, 28), 1.04), ((40, 24), 1.08)]
    for split, seconds in steps:
        _window(judge, split, seconds)
        judge.changed()
    assert judge.judge((40, 24), 0.05, now=3) is None  # one window slower: not yet
    _window(judge, (40, 24), 1.08)
    verdict = judge.judge((40, 24), 0.05, now=4)
    assert verdict is not None and verdict.split == (32, 32)
    assert "returns to 32,32" in verdict.reason


def test_a_speed_change_forgets_what_was_measured_before() -> None:
    judge = DecisionJudge(EVERY)
    _window(judge, (32, 32), 0.5)  # every rank fast then
    judge.forget()
    _window(judge, (40, 24), 1.0)
    _window(judge, (40, 24), 1.0)
    assert judge.judge((40, 24), 0.05, now=2) is None
    assert judge.judge((40, 24), 0.05, now=3) is None


def _loaded_pair(steps: int) -> tuple[list[tuple[int, ...]], list[str]]:
    """Issue 84's loaded machine: a 1:3 pair whose exchange the ranks measure as costly (0.5 s a
    step: the load stretches their waits), so the model benches the slow rank — but the steps,
    measured whole, are slower with the fast rank alone (its core shared) than with the pair."""
    config = BalancerConfig(policy="dynamic", global_batch=64, world_size=2,
                            rebalance_every=EVERY, allow_zero=True, threshold=0.0)
    balancer = Balancer(config, (32, 32))
    split, splits, reasons = (32, 32), [], []
    for step in range(1, steps + 1):
        compute = (0.002 * split[0], 0.006 * split[1])
        balancer.observe(split, compute)
        if split[1]:
            balancer.observe_exchange(split, (0.5, 0.5))
        balancer.observe_step(split, max(compute) + 0.02 if split[1] else 2 * compute[0])
        splits.append(split)
        if step % EVERY == 0 and (decision := balancer.decide(step)) is not None:
            split = decision.split
            reasons.append(decision.reason)
    return splits, reasons


def test_a_bench_that_measured_slower_is_undone_and_retried_ever_less_often() -> None:
    splits, reasons = _loaded_pair(400)
    undos = [r for r in reasons if "undoes step" in r]
    assert undos and "not tried again for 1 window" in undos[0]
    benched = [i for i, s in enumerate(splits) if s == (64, 0)]
    # Each trial costs a window; the waits between them double (1, 2, 4, 8, 16 windows).
    assert len(benched) <= 6 * EVERY, len(benched)
    assert len(undos) >= 3
    assert splits[-1][1] > 0  # the pair, at the end


def test_without_step_measurements_the_balancer_decides_as_before() -> None:
    config = BalancerConfig(policy="dynamic", global_batch=64, world_size=2,
                            rebalance_every=EVERY, allow_zero=True, threshold=0.0)
    balancer = Balancer(config, (32, 32))
    split = (32, 32)
    for step in range(1, 101):
        balancer.observe(split, (0.002 * split[0], 0.006 * split[1]))
        if split[1]:
            balancer.observe_exchange(split, (0.5, 0.5))
        if step % EVERY == 0 and (decision := balancer.decide(step)) is not None:
            split = decision.split
    assert split == (64, 0)


def test_the_judge_is_part_of_the_balancers_checkpoint() -> None:
    judge = DecisionJudge(EVERY)
    _window(judge, (32, 32), 1.0)
    judge.start_trial(10, (32, 32), (64, 0), 0.3)
    _window(judge, (64, 0), 2.0)
    restored = DecisionJudge(EVERY)
    restored.load_state_dict(judge.state_dict())
    assert restored.judge((64, 0), 0.05, 2) == judge.judge((64, 0), 0.05, 2)
    assert restored.refuses((32, 32), (64, 0), 2) and judge.refuses((32, 32), (64, 0), 2)


@pytest.mark.parametrize(("slowest_after", "undone"), [((0.20, 0.30), False),
                                                        ((0.30, 0.20), True)])
def test_a_move_is_undone_only_when_a_rank_it_gave_samples_to_is_the_slowest_after(
        slowest_after: tuple[float, float], undone: bool) -> None:
    judge = DecisionJudge(EVERY)
    old, new = (46, 18), (48, 16)
    _window(judge, old, 0.23)
    judge.start_trial(10, old, new, predicted_gain=0.1)
    _window(judge, new, 0.31)  # slower after the move by far more than the margin
    verdict = judge.judge(new, margin=0.05, now=2, compute_after=slowest_after)
    assert (verdict is not None) == undone


def test_a_busy_machine_slowing_the_rank_a_move_relieved_does_not_undo_the_move() -> None:
    # Issue 84's pair at load 10-13: the split moved 46,18 -> 48,16 towards the slow rank's
    # balance, then that rank's time per sample grew 1.5x (other work on its core). The steps
    # measured slower, but giving the slow rank its samples back would only make them slower.
    config = BalancerConfig(policy="dynamic", global_batch=64, world_size=2,
                            rebalance_every=EVERY, threshold=0.0)
    balancer = Balancer(config, (46, 18))
    split: tuple[int, ...] = (46, 18)
    reasons: list[str] = []
    for step in range(1, 3 * EVERY + 1):
        slow = 0.0125 if step <= EVERY else 0.0125 * 1.5
        compute = (0.0040 * split[0], slow * split[1])
        balancer.observe(split, compute)
        balancer.observe_step(split, max(compute) + 0.005)
        if step % EVERY == 0 and (decision := balancer.decide(step)) is not None:
            split = decision.split
            reasons.append(decision.reason)
    assert reasons and "rank 1 slowest" in reasons[0]
    assert not [r for r in reasons if "undoes step" in r], reasons
    assert split[1] < 18  # the slow rank's share went on shrinking as its speed fell
