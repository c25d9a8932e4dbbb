"""The shares a user's script gets from corral: the environment contract and the samplers."""

from __future__ import annotations

from collections import Counter

import pytest

from profiles.user_errors import UsageError
from trainer.integrations.contract import ScriptSettings
from trainer.integrations.shares import GlobalStepSampler, RankStepSampler, ShareSchedule
from trainer.step.batch_order import GlobalBatchOrder


def test_settings_round_trip_through_the_environment() -> None:
    settings = ScriptSettings(run_dir="/runs/r1", restart=1, policy="dynamic", split=(5, 2, 1),
                              rebalance_every=4, slowdown=(1.0, 2.0, 3.0))
    assert ScriptSettings.from_env(settings.to_env()) == settings
    assert ScriptSettings.from_env({}) is None  # not run by corral: the opt-in does nothing


@pytest.mark.parametrize("env", [{"CORRAL_POLICY": "fastest"}, {"CORRAL_SPLIT": "5,two,1"},
                                 {"CORRAL_RESTART": "-1"}])
def test_a_bad_setting_is_one_clear_error_naming_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(UsageError, match=next(iter(env))):
        ScriptSettings.from_env({"CORRAL_RUN_DIR": "/runs/r1", **env})


def test_a_split_that_does_not_fit_the_global_batch_is_one_warning_and_equal_shares(
        capsys: pytest.CaptureFixture[str]) -> None:
    # the embedded cluster.toml's split = [32, 32, 32] must not fail a script of batch 9
    schedule = ShareSchedule(ScriptSettings(run_dir="x", split=(5, 2, 1)), global_batch=9,
                             world=3, rank=0)
    assert schedule.split_at_quietly(1) == (3, 3, 3)
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "CORRAL_SPLIT=5,2,1" in said[0] and "global batch 9" in said[0]


def test_a_global_batch_too_small_for_the_ranks_is_one_clear_error() -> None:
    with pytest.raises(UsageError, match=r"global batch 2 cannot give 3 shares"):
        ShareSchedule(ScriptSettings(run_dir="x"), global_batch=2, world=3, rank=0)


def test_global_sampler_gives_each_rank_its_share_and_every_example_once_per_epoch() -> None:
    schedule = ShareSchedule(ScriptSettings(run_dir="x", split=(6, 2, 2)), global_batch=10,
                             world=3, rank=0, min_share=2)
    order = GlobalBatchOrder(45, 10, seed=3)
    sampler = GlobalStepSampler(order, schedule, rounds=2)
    lists = list(sampler)
    assert len(lists) == len(sampler) == 4 * 2 * 3  # steps x rounds x ranks
    # rank r takes every r-th list (accelerate's BatchSamplerShard): its rounds sum to its share
    per_rank = [lists[r::3] for r in range(3)]
    for rank, share in enumerate((6, 2, 2)):
        assert [len(a) + len(b) for a, b in zip(per_rank[rank][::2], per_rank[rank][1::2],
                                                 strict=True)] == [share] * 4
    seen = Counter(i for batch in lists for i in batch)
    assert len(seen) == 40 and set(seen.values()) == {1}  # 4 full steps of 10, none twice


def test_rank_sampler_follows_a_split_change_from_its_first_step_on() -> None:
    schedules = [ShareSchedule(ScriptSettings(run_dir="x"), global_batch=6, world=2, rank=r)
                 for r in range(2)]
    order = GlobalBatchOrder(24, 6, seed=0)
    iters = [iter(RankStepSampler(order, s)) for s in schedules]
    first = [next(it) for it in iters]
    for schedule in schedules:
        schedule.apply(3, (5, 1))  # decided after step 1: two steps of lead
    rest = [list(it) for it in iters]
    assert [len(b) for b in rest[0]] == [3, 5, 5] and [len(b) for b in rest[1]] == [3, 1, 1]
    everything = first[0] + first[1] + [i for r in rest for b in r for i in b]
    assert sorted(everything) == list(range(24))


def test_a_change_for_a_step_already_drawn_is_refused() -> None:
    schedule = ShareSchedule(ScriptSettings(run_dir="x"), global_batch=4, world=2, rank=0)
    schedule.split_at(3)
    with pytest.raises(RuntimeError, match="already drawn"):
        schedule.apply(3, (3, 1))


def test_proportional_sets_the_shares_once_from_the_measured_speeds() -> None:
    settings = ScriptSettings(run_dir="x", policy="proportional", rebalance_every=4)
    schedule = ShareSchedule(settings, global_batch=12, world=2, rank=0)
    decisions = [schedule.decide(step, (6, 6), [0.1, 0.2]) for step in range(1, 9)]
    made = [d for d in decisions if d is not None]
    assert len(made) == 1  # once, after the measured steps
    assert made[0].first_step == 4 + schedule.lead
    assert made[0].decision.split == (8, 4)  # rank 0 twice as fast


def test_the_ddp_helper_loader_keeps_set_epoch_on_loader_sampler(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The tutorial's order: the loader is made before any model; ``loader.sampler`` is the
    share sampler, and ``set_epoch`` picks the epoch's order as a DistributedSampler's does."""
    import torch
    from torch.utils.data import TensorDataset

    from trainer.integrations.ddp import Shares

    monkeypatch.delenv("CORRAL_RUN_DIR", raising=False)
    shares = Shares(12, global_batch=4, epochs=2)
    loader = shares.loader(TensorDataset(torch.arange(12)))
    assert loader.sampler is shares.sampler and len(loader) == 3

    def epoch_order(epoch: int) -> list[int]:
        loader.sampler.set_epoch(epoch)
        return [int(i) for (batch,) in loader for i in batch]

    first, second = epoch_order(0), epoch_order(1)
    assert sorted(first) == sorted(second) == list(range(12)) and first != second
    assert epoch_order(0) == first  # set_epoch(0) again: the same order


@pytest.mark.parametrize("policy", ["dynamic", "proportional"])
def test_no_split_is_decided_for_a_step_after_the_last(policy: str) -> None:
    """A 20-step run once listed a rebalance for step 22: a decision needs a step to use it."""
    def decisions(last_step: int) -> list[int]:
        settings = ScriptSettings(run_dir="x", policy=policy,  # type: ignore[arg-type]
                                  rebalance_every=4)
        schedule = ShareSchedule(settings, global_batch=12, world=2, rank=0)
        schedule.last_step = last_step
        made = [schedule.decide(step, (6, 6), [0.1, 0.4]) for step in range(1, last_step + 1)]
        return [d.first_step for d in made if d is not None]

    unbounded = decisions(40)
    assert unbounded, "rank 1 four times slower: some split must be decided"
    for last in (4, 5, 8, 9, 20):
        firsts = decisions(last)
        assert all(first <= last for first in firsts), (last, firsts)


@pytest.mark.parametrize("first", [0, 1, 5])
def test_the_ddp_helper_takes_any_epoch_numbering(monkeypatch: pytest.MonkeyPatch,
                                                   first: int) -> None:
    """``set_epoch(1)`` for the first epoch (pytorch/examples counts from 1) draws the first
    epoch's steps: the n-th number given is the n-th epoch, and the steps stay in the run."""
    import torch
    from torch.utils.data import TensorDataset

    from trainer.integrations.ddp import Shares

    monkeypatch.delenv("CORRAL_RUN_DIR", raising=False)
    shares = Shares(12, global_batch=4, epochs=3)
    loader = shares.loader(TensorDataset(torch.arange(12)))
    next(iter(loader))  # a tutorial's peek before training: harmless
    orders = []
    for epoch in range(first, first + 3):
        loader.sampler.set_epoch(epoch)
        orders.append([int(i) for (batch,) in loader for i in batch])
    assert shares.schedule.drawn == 9  # 3 epochs of 3 steps: no step after the run's last
    zero_based = Shares(12, global_batch=4, epochs=3)
    expected = []
    for epoch in range(3):
        zero_based.sampler.set_epoch(epoch)
        expected.append([i for step in zero_based.sampler for i in step])
    assert orders == expected


def test_a_joiners_sampler_draws_from_the_step_after_the_one_it_was_let_in_at() -> None:
    # let in after step 26 of 10-step epochs: its first two passes are empty, the third
    # starts at step 27, with its place in the new generation (rank 2 of 3)
    order = GlobalBatchOrder(60, 6, seed=1)
    alone = ShareSchedule(ScriptSettings(run_dir="x"), global_batch=6, world=1, rank=0)
    asked: list[int] = []
    sampler = RankStepSampler(order, alone, on_step=asked.append)

    def admit(step: int) -> None:
        asked.append(step)
        if sampler.resume_at == 1:
            sampler.schedule = alone.for_generation(3, 2, (2, 3, 1), 27)
            sampler.resume_at = 27

    sampler.on_step = admit
    passes = [list(sampler) for _ in range(3)]
    assert passes[0] == passes[1] == []
    assert [len(b) for b in passes[2]] == [1, 1, 1, 1]  # steps 27..30, its share of 1
    assert passes[2][0] == order.local_indices(27, (2, 3, 1), 2).tolist()
    assert asked == [1, 27, 28, 29, 30, 31]  # no skipped step reported


def test_a_leavers_sampler_hands_out_nothing_after_its_host_left() -> None:
    order = GlobalBatchOrder(40, 4, seed=0)
    schedule = ShareSchedule(ScriptSettings(run_dir="x"), global_batch=4, world=2, rank=1)
    sampler = RankStepSampler(order, schedule)

    def leave_at_5(step: int) -> None:
        sampler.ended = step == 5 or sampler.ended

    sampler.on_step = leave_at_5
    assert len(list(sampler)) == 4 and list(sampler) == []


def test_a_new_generations_schedule_cuts_the_steps_after_the_change_among_its_ranks() -> None:
    before = ShareSchedule(ScriptSettings(run_dir="x", policy="dynamic"), global_batch=12,
                           world=3, rank=2)
    before.split_at(9)
    after = before.for_generation(2, 1, (7, 5), 10)
    assert (after.world, after.rank, after.split_at_quietly(10)) == (2, 1, (7, 5))
    assert after.drawn == 9 and after.balancer is None  # rank 1: no balancer
    with pytest.raises(RuntimeError, match="already drawn"):
        after.apply(9, (6, 6))


def test_a_new_generation_keeps_the_runs_least_share() -> None:
    """The HF opt-in's least share is its accumulation rounds (one sample each). On the old
    code a generation formed by a live leave started its balancer at a least share of 1: it
    moved a slow rank to 1 sample over 2 rounds, and that rank's Trainer failed on an empty
    batch (``IndexError`` in the collator) two steps after ``corral leave``."""
    schedule = ShareSchedule(ScriptSettings(run_dir="x", policy="dynamic", rebalance_every=2),
                             global_batch=12, world=3, rank=0, lead=1, min_share=2)
    fresh = schedule.for_generation(2, 0, (10, 2), from_step=5)
    shares = (10, 2)
    for step in range(5, 40):
        decided = fresh.decide(step, shares, [0.001, 0.05])  # rank 1 far slower a sample
        if decided is not None:
            shares = decided.decision.split
            fresh.apply(decided.first_step, shares)
    assert shares[0] > 2 and min(shares) == 2, shares  # moved as far as the least share
