"""Each rank's solo figure at the run's start (trainer/step/solo.py), in one process alone in
its group (no process started): a probe is timed once, then the next run reads it back; the
timed passes leave the model, its buffers and the random streams as they were, so a run with a
probe trains exactly as one without."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn

import trainer.step.solo as solo_module
from trainer.settings.train_config import TrainConfig
from trainer.step.solo import probe_batch, solo_batch, solo_fields, solo_figures

CPU = torch.device("cpu")
_KEPT: list[object] = []
"""The groups ``alone`` made, kept alive: on torch 2.6 the gloo group's destructor, joining its
threads after the bf16 probe, hung a test worker (2 of 7 runs of this file here; CI's matrix
sat 12 minutes in it). Kept, it never runs before the process ends (32 of 32 runs passed)."""


@pytest.fixture
def alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A gloo group of one rank in this process, and a profile store of the test's own."""
    monkeypatch.setenv("CORRAL_PROFILE_DIR", str(tmp_path / "store"))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        yield
    finally:
        _KEPT.append(dist.group.WORLD)  # its gloo threads are never joined (below)
        dist.destroy_process_group()


def _loss(model: nn.Module, batch: Any) -> tuple[torch.Tensor, int]:
    x, y = batch
    return nn.functional.cross_entropy(nn.functional.dropout(model(x), 0.5), y,
                                       reduction="sum"), len(y)


def _figures(model: nn.Module, config: TrainConfig, warmed: float | None = None) -> Any:
    def batch_of(n: int) -> Any:
        return torch.ones(n, 8), torch.zeros(n, dtype=torch.long)

    return solo_figures(config, world_size=1, rank=0, model=model, loss=_loss,
                        batch_of=batch_of, device=CPU, slowdown=1.0, emulated_run=False,
                        host="box", device_name="test cpu", micro_batch=(8,), warmed=warmed)


def test_a_probe_runs_once_and_the_next_run_reads_it_back(
        alone: None, monkeypatch: pytest.MonkeyPatch) -> None:
    timed: list[int] = []
    real = solo_module.warmup_rate

    def counted(*args: Any) -> float:
        timed.append(1)
        return real(*args)

    monkeypatch.setattr(solo_module, "warmup_rate", counted)
    config = replace(TrainConfig(), global_batch=32, capacity_passes=1)
    model = nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4))
    first = _figures(model, config)
    again = _figures(model, config)
    assert first.source == again.source == ("probe",) and first.batch == (8,)
    assert first.samples_per_s == again.samples_per_s and (first.samples_per_s[0] or 0) > 0
    assert timed == [1]  # the second run measured nothing
    assert solo_fields(first) == {"solo_samples_per_s": first.samples_per_s,
                                  "solo_source": ("probe",), "solo_batch": (8,)}
    assert solo_fields(None) == {}


def test_the_probe_leaves_the_model_and_the_random_streams_as_they_were(alone: None) -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    expected = torch.rand(4)  # what the training draws next, without a probe
    torch.manual_seed(3)
    nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4))  # the same draws as building the model
    _figures(model, replace(TrainConfig(), global_batch=32, capacity_passes=2))
    assert torch.equal(torch.rand(4), expected)
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(("global_batch", "micro", "batch"),
                         [(64, 16, 16), (64, None, 64), (8, 16, 8)])
def test_the_solo_batch_is_the_micro_batch_within_the_global_batch(
        global_batch: int, micro: int | None, batch: int) -> None:
    assert solo_batch(global_batch, micro) == batch


class _Recorder(nn.Module):
    """A linear layer that records whether autocast was on in each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 4)
        self.autocast: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        return self.linear(x)


@pytest.mark.parametrize(("precision", "on"), [("bf16", True), ("fp32", False)])
def test_the_probe_runs_in_the_runs_precision(alone: None, precision: str, on: bool) -> None:
    model = _Recorder()
    _figures(model, replace(TrainConfig(), global_batch=32, capacity_passes=1,
                            precision=precision))  # type: ignore[arg-type]
    assert model.autocast and set(model.autocast) == {on}


def test_a_cpu_rank_whose_warm_up_timed_the_batch_measures_nothing_more(
        alone: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any) -> float:
        raise AssertionError("timed again")

    monkeypatch.setattr(solo_module, "warmup_rate", never)
    figures = _figures(nn.Linear(8, 4), replace(TrainConfig(), global_batch=32), warmed=123.0)
    assert (figures.samples_per_s, figures.source) == ((123.0,), ("probe",))


@pytest.mark.parametrize(("micro", "world", "on_cpu", "batch"),
                         [(None, 4, True, 16), (8, 4, True, 8), (None, 4, False, 64),
                          (32, 4, False, 32), (None, 1, True, 64)])
def test_a_cpu_probe_times_no_more_than_the_equal_share(
        micro: int | None, world: int, on_cpu: bool, batch: int) -> None:
    assert probe_batch(64, micro, world, on_cpu=on_cpu) == batch
