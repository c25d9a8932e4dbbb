"""Before a run: each rank's training state against its memory budget, under each
``shard_state`` (trainer/step/state_fit.py), and a refusal naming the rank, by how much and
the setting to change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from trainer.settings.train_config import TrainConfig
from trainer.step import shards
from trainer.step.optim import optimizer_step, state_fields
from trainer.step.state_fit import (
    GIB,
    optimizer_copies,
    rank_state_bytes,
    refusal,
    state_fit,
)

P = 1.0 * GIB
"""A model of 1 GiB of fp32 parameters."""
BUDGETS = [("small", 3.0 * GIB), ("mid", 6.0 * GIB), ("big", 12.0 * GIB)]
"""Budgets 1:2:4."""


def test_replicated_state_is_parameters_gradients_and_the_optimizer_s_copies_per_rank() -> None:
    assert optimizer_copies("adamw", 0.0) == 2
    assert optimizer_copies("sgd", 0.9) == 1 and optimizer_copies("sgd", 0.0) == 0
    assert rank_state_bytes(P, 2, "replicate", [1.0, 2.0, 4.0]) == (4 * P,) * 3


def test_sharded_state_gives_each_rank_the_optimizer_slice_its_budget_sizes() -> None:
    states = rank_state_bytes(P, 2, "optimizer", [1.0, 2.0, 4.0])
    # Parameters and the flat gradient whole (2P), AdamW's two moments of a 1/7, 2/7, 4/7 slice.
    assert states == pytest.approx([2 * P + 2 * P / 7, 2 * P + 4 * P / 7, 2 * P + 8 * P / 7])
    assert sum(s - 2 * P for s in states) == pytest.approx(2 * P)  # the optimizer state once


def test_stage_2_holds_the_parameters_whole_and_a_slice_of_the_gradient() -> None:
    states = rank_state_bytes(P, 2, "gradients", [1.0, 2.0, 4.0])
    # The parameters whole (P); the gradient and AdamW's two moments of a 1/7, 2/7, 4/7 slice.
    assert states == pytest.approx([P + 3 * P / 7, P + 6 * P / 7, P + 12 * P / 7])
    assert sum(s - P for s in states) == pytest.approx(3 * P)  # gradient and moments once


def test_a_model_too_big_to_replicate_on_the_small_host_fits_sharded() -> None:
    replicated = state_fit(P, 2, "replicate", BUDGETS)
    assert not replicated.fits and replicated.worst.host == "small"
    assert replicated.worst.short == pytest.approx(1.0 * GIB)  # 4 GiB of state, 3 GiB budget
    assert state_fit(P, 2, "optimizer", BUDGETS).fits
    why = refusal(P, 2, "replicate", BUDGETS)
    assert why is not None
    assert "rank 0 (host 'small')" in why and "4 GiB" in why and "3 GiB" in why
    assert "1 GiB short" in why and 'shard_state = "optimizer" fits' in why
    assert refusal(P, 2, "optimizer", BUDGETS) is None


def test_when_nothing_fits_the_refusal_says_why_and_names_the_host_s_settings() -> None:
    tight = [("small", 0.75 * GIB), ("big", 12.0 * GIB)]
    why = refusal(P, 2, "gradients", tight, shared=["small"])
    assert why is not None
    assert "rank 0 (host 'small')" in why and "short" in why
    # 1 GiB of parameters on every rank: no shard_state helps.
    assert "every rank holds the parameters whole (1 GiB" in why
    assert "state_budget of host 'small'" in why and "fewer ranks on host 'small'" in why
    alone = refusal(P, 2, "gradients", tight)
    assert alone is not None and "fewer ranks" not in alone  # its ranks share nothing


def test_an_unknown_shard_state_is_refused() -> None:
    with pytest.raises(ValueError, match="shard_state"):
        rank_state_bytes(P, 2, "params", [1.0])


def test_a_rank_reports_its_state_bytes_and_budget_replicated_or_sharded() -> None:
    cpu = torch.device("cpu")
    config = TrainConfig(optimizer="adamw", state_budget=(2.0,))
    model = nn.Linear(10, 10)  # 110 fp32 parameters: 440 bytes
    whole = optimizer_step(config, list(model.parameters()), rank=0, world=1, device=cpu,
                           total_steps=1)
    assert state_fields(config, whole, 0, cpu) == {"state_bytes": 4 * 440,
                                                   "state_budget": 2 * GIB}
    sharded = TrainConfig(optimizer="sgd", momentum=0.9, shard_state="optimizer",
                          state_budget=(0.5,))
    one = optimizer_step(sharded, list(nn.Linear(10, 10).parameters()), rank=0, world=1,
                         device=cpu, total_steps=1)
    assert state_fields(sharded, one, 0, cpu) == {"state_bytes": 3 * 440,
                                                  "state_budget": GIB // 2}


def test_a_cpu_rank_s_budget_is_capped_by_its_cgroup_v1_or_v2(tmp_path: Path) -> None:
    v1 = tmp_path / "memory" / "box" / "host-a"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{3 * GIB}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{GIB}\n")
    own = tmp_path / "cgroup"
    own.write_text("4:memory:/box/host-a\n1:cpu:/\n0::/\n")
    assert shards._cgroup_room(tmp_path, own) == 2 * GIB
    v2 = tmp_path / "run" / "host-b"
    v2.mkdir(parents=True)
    (v2 / "memory.max").write_text(f"{GIB}\n")
    (v2 / "memory.current").write_text(f"{GIB // 4}\n")
    own.write_text("0::/run/host-b\n")
    assert shards._cgroup_room(tmp_path, own) == GIB * 3 / 4
    (v2 / "memory.max").write_text("max\n")
    assert shards._cgroup_room(tmp_path, own) == float("inf")
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    own.write_text("4:memory:/box/host-a\n")
    assert shards._cgroup_room(tmp_path, own) == float("inf")


def test_a_measured_budget_counts_the_parameters_the_model_already_holds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "measured_budget", lambda device: float(GIB))
    cpu, config = torch.device("cpu"), TrainConfig(optimizer="adamw")
    built = optimizer_step(config, list(nn.Linear(10, 10).parameters()), rank=0, world=1,
                           device=cpu, total_steps=1)
    # Measured once the model was built: its 440 bytes of parameters were already taken.
    assert state_fields(config, built, 0, cpu)["state_budget"] == GIB + 440
