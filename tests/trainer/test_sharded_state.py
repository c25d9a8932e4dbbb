"""Sharded training state (``shard_state``, trainer/step/shards.py): each rank's slice sized by
its budget, and stage 1 (optimizer state) and stage 2 (gradients too) give the parameters one
process gives, with unequal budgets and a benched rank."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from trainer.settings.train_config import TrainConfig
from trainer.step import grad_buckets, shards
from trainer.step.shards import slice_bounds


def test_slices_are_contiguous_and_sized_by_the_budgets() -> None:
    bounds = slice_bounds(7000, [1.0, 2.0, 4.0])
    assert bounds == ((0, 1000), (1000, 3000), (3000, 7000))
    uneven = slice_bounds(101, [3e9, 1e9, 6e9])  # bytes: only the ratio counts
    assert uneven[0][0] == 0 and uneven[-1][1] == 101
    assert all(a[1] == b[0] for a, b in itertools.pairwise(uneven))  # no gap
    assert [hi - lo for lo, hi in uneven] == [30, 10, 61]


def test_a_zero_budget_gets_an_empty_slice_and_bad_budgets_are_refused() -> None:
    assert slice_bounds(10, [1.0, 0.0, 1.0]) == ((0, 5), (5, 5), (5, 10))
    for bad in ([0.0, 0.0], [1.0, -1.0]):
        with pytest.raises(ValueError, match="budgets"):
            slice_bounds(10, bad)


def test_a_cpu_rank_s_budget_is_its_share_of_the_host_s_available_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "host_available_bytes", lambda: 8.0 * shards.GIB)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert shards.measured_budget(torch.device("cpu")) == 2.0 * shards.GIB
    assert 0 < shards.host_available_bytes() < float("inf")  # /proc/meminfo read


def test_a_joiner_holds_the_whole_vector_until_its_generation_re_slices_it() -> None:
    # A joiner gathers no budget (the run is mid-step); the forming cuts it with the others'.
    config = TrainConfig(shard_state="gradients", state_budget=(3.0,))
    params = [nn.Parameter(torch.arange(6.0)), nn.Parameter(torch.arange(4.0))]
    state = shards.make_shards(config, params, rank=3, world=4, device=torch.device("cpu"),
                               joining=True)
    assert state is not None and state.owned == 10 and state.own_budget == 3 * shards.GIB
    state.reslice(3, 4, [1.0, 2.0, 4.0, 3.0])
    assert state.bounds[3] == (7, 10) and state.master.tolist() == [1.0, 2.0, 3.0]
    state.master.data.add_(1.0)  # the slice still updates the parameters in place
    assert params[1].tolist() == [0.0, 2.0, 3.0, 4.0]


def test_buckets_run_from_the_last_parameter_back_and_stay_within_the_cap() -> None:
    # The backward produces the last parameters' gradients first; a parameter larger than the
    # cap is a bucket of its own.
    assert grad_buckets.bucket_runs([30, 5, 4, 2, 15, 3], 10) == [[5], [4], [3, 2], [1], [0]]
    assert grad_buckets.bucket_runs([1, 2, 3], 100) == [[2, 1, 0]]
"""Rows per rank: ranks 1 and 2 benched (their zero buckets sent after no backward), so two
non-zero gradients are summed (the same in any order); rank 3 in two passes."""
"""10 fp32 elements a bucket: buckets cross the slices' bounds."""
"""(step, rank): a gradient element of rank 0's slice made infinite on that rank."""
