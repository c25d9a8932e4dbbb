"""Sharded training state (``shard_state``, trainer/step/shards.py): each rank's slice sized by
its budget, and stage 1 (optimizer state) and stage 2 (gradients too) give the parameters one
process gives, with unequal budgets and a benched rank."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from trainer_runs import check, cut_back_to, final_params, launch, max_rel_diff, start_group

from trainer.settings.train_config import TrainConfig
from trainer.step import grad_buckets, shards
from trainer.step.optim import OptimizerStep, make_optimizer
from trainer.step.shards import ShardedState, slice_bounds


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


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


CONFIG = TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.1, clip_grad=0.05)
SPLIT = (4, 0, 12)  # rank 1 benched: two non-zero gradients sum to the same in any order
BUDGETS = (1.0, 2.0, 4.0)
STEPS = 4


def _batch(step: int) -> torch.Tensor:
    return torch.randn(sum(SPLIT), 6, generator=torch.Generator().manual_seed(step))


def _backward(model: nn.Module, rows: torch.Tensor) -> None:
    if len(rows):
        model(rows).pow(2).sum().backward()


def _sharded_rank(rank: int, store: str, out: str, stage: str) -> None:
    world = len(SPLIT)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    model = _model()
    params = list(model.parameters())
    shards = ShardedState(params, rank=rank, world=world, budgets=BUDGETS, stage=stage)  # type: ignore[arg-type]
    step = OptimizerStep(CONFIG, make_optimizer(CONFIG, [shards.master]), params,
                         torch.device("cpu"), world, STEPS, shards=shards)
    start = sum(SPLIT[:rank])
    norms = []
    for s in range(1, STEPS + 1):
        _backward(model, _batch(s)[start:start + SPLIT[rank]])
        shards.reduce_gradients()
        norms.append(step.step(s, float(sum(SPLIT))).grad_norm)
    state = [v for per in step.optimizer.state.values() for v in per.values()
             if isinstance(v, torch.Tensor) and v.dim() > 0]
    torch.save({"params": [p.detach().clone() for p in params], "norms": norms,
                "state": [t.numel() for t in state], "owned": shards.owned},
               f"{out}/rank-{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def _replicated() -> tuple[list[torch.Tensor], list[float | None]]:
    """One process, the same per-rank gradients summed as the exchange sums them, the whole
    optimizer state in one place (the replicated step every exactness test holds to one
    process)."""
    model, world = _model(), len(SPLIT)
    params = list(model.parameters())
    step = OptimizerStep(CONFIG, make_optimizer(CONFIG, params), params, torch.device("cpu"),
                         world, STEPS)
    norms = []
    for s in range(1, STEPS + 1):
        grads = []
        for rank in range(world):
            start = sum(SPLIT[:rank])
            model.zero_grad(set_to_none=True)
            _backward(model, _batch(s)[start:start + SPLIT[rank]])
            grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                          for p in params])
        for p, parts in zip(params, zip(*grads, strict=True), strict=True):
            p.grad = (parts[0] + parts[2]) / world  # DDP's mean; rank 1 adds zeros
        norms.append(step.step(s, float(sum(SPLIT))).grad_norm)
    return [p.detach().clone() for p in params], norms


@pytest.mark.slow  # three processes in a gloo group
def test_sharded_steps_give_the_replicated_parameters_with_budgets_1_2_4_and_a_benched_rank(
        tmp_path: Path) -> None:
    # Stage 1 here; stage 2's bucketed exchange below, its reduce after the backward in the
    # overflow test and the trainer runs.
    stage = "optimizer"
    start_group(_sharded_rank, (str(tmp_path / "store"), str(tmp_path), stage), len(SPLIT))
    results = [torch.load(tmp_path / f"rank-{r}.pt") for r in range(len(SPLIT))]
    expected, norms = _replicated()
    total = sum(p.numel() for p in expected)
    for rank, result in enumerate(results):
        # Every rank, the benched one too, holds the same parameters as one process.
        for got, want in zip(result["params"], expected, strict=True):
            assert (got - want).abs().max().item() <= 1e-6 * want.abs().max().item()
        assert result["norms"] == pytest.approx(norms, rel=1e-6)  # the global norm clipped to
        # Each rank's optimizer state is its slice's: AdamW's two moments, 1:2:4 of the model.
        lo, hi = slice_bounds(total, BUDGETS)[rank]
        assert result["owned"] == hi - lo and result["state"] == [hi - lo, hi - lo]
    assert sum(r["owned"] for r in results) == total


def test_buckets_run_from_the_last_parameter_back_and_stay_within_the_cap() -> None:
    # The backward produces the last parameters' gradients first; a parameter larger than the
    # cap is a bucket of its own.
    assert grad_buckets.bucket_runs([30, 5, 4, 2, 15, 3], 10) == [[5], [4], [3, 2], [1], [0]]
    assert grad_buckets.bucket_runs([1, 2, 3], 100) == [[2, 1, 0]]


class _Unused(nn.Module):
    """Two layers with an unused one between them: its bucket gets no gradient from the
    backward and goes out, zero, after it; the buckets behind it wait for it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.idle, self.last = nn.Linear(6, 5), nn.Linear(2, 2), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(torch.tanh(self.first(x)))


BUCKETED_SPLIT = (9, 0, 0, 7)
"""Rows per rank: ranks 1 and 2 benched (their zero buckets sent after no backward), so two
non-zero gradients are summed (the same in any order); rank 3 in two passes."""
BUCKETED_BUDGETS = (3.0, 1.0, 2.0, 5.0)
BUCKET_BYTES = 40
"""10 fp32 elements a bucket: buckets cross the slices' bounds."""


def _bucketed_batch(step: int) -> torch.Tensor:
    return torch.randn(sum(BUCKETED_SPLIT), 6, generator=torch.Generator().manual_seed(step))


def _bucketed_rank(rank: int, store: str, out: str) -> None:
    world = len(BUCKETED_SPLIT)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    grad_buckets.BUCKET_BYTES = BUCKET_BYTES
    model = _Unused()
    params = list(model.parameters())
    shards = ShardedState(params, rank=rank, world=world, budgets=BUCKETED_BUDGETS,
                          stage="gradients")
    step = OptimizerStep(CONFIG, make_optimizer(CONFIG, [shards.master]), params,
                         torch.device("cpu"), world, STEPS, shards=shards)
    start, held = sum(BUCKETED_SPLIT[:rank]), []
    for s in range(1, STEPS + 1):
        passes = _passes(_bucketed_batch(s)[start:start + BUCKETED_SPLIT[rank]], rank)
        for i, rows in enumerate(passes):
            if i == len(passes) - 1:
                shards.arm()
            _backward(model, rows)
        held.append(sum(p.grad.numel() for p in params if p.grad is not None))
        shards.reduce_gradients()
        step.step(s, float(sum(BUCKETED_SPLIT)))
    torch.save({"params": [p.detach().clone() for p in params], "held": held,
                "owned": shards.owned}, f"{out}/rank-{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def _passes(rows: torch.Tensor, rank: int) -> list[torch.Tensor]:
    """Rank 3's share in two passes (a micro-batch of 4), the others' in one."""
    return list(rows.split(4)) if rank == 3 else [rows] if len(rows) else []


def _bucketed_one_process() -> list[torch.Tensor]:
    """One process: each rank's passes accumulated as that rank accumulates them, the ranks'
    gradients summed and divided by the world (DDP's mean), the whole AdamW state here."""
    model, world = _Unused(), len(BUCKETED_SPLIT)
    params = list(model.parameters())
    step = OptimizerStep(CONFIG, make_optimizer(CONFIG, params), params, torch.device("cpu"),
                         world, STEPS)
    for s in range(1, STEPS + 1):
        grads = []
        for rank in range(world):
            start = sum(BUCKETED_SPLIT[:rank])
            model.zero_grad(set_to_none=True)
            for rows in _passes(_bucketed_batch(s)[start:start + BUCKETED_SPLIT[rank]], rank):
                _backward(model, rows)
            grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                          for p in params])
        for p, parts in zip(params, zip(*grads, strict=True), strict=True):
            p.grad = (parts[0] + parts[3]) / world  # ranks 1 and 2 add zeros
        step.step(s, float(sum(BUCKETED_SPLIT)))
    return [p.detach().clone() for p in params]


@pytest.mark.slow  # four processes in a gloo group
def test_stage_2_reduces_each_bucket_during_the_backward_frees_it_and_stays_exact(
        tmp_path: Path) -> None:
    start_group(_bucketed_rank, (str(tmp_path / "store"), str(tmp_path)), len(BUCKETED_SPLIT))
    expected = _bucketed_one_process()
    total = sum(p.numel() for p in expected)
    results = [torch.load(tmp_path / f"rank-{r}.pt") for r in range(len(BUCKETED_SPLIT))]
    for rank, result in enumerate(results):
        for got, want in zip(result["params"], expected, strict=True):
            assert (got - want).abs().max().item() <= 1e-6 * want.abs().max().item(), rank
        # After the backward a rank holds no full gradient but the first layer's: the last
        # layer's bucket went out and was freed during the backward; the first layer's waits
        # for the unused layer's bucket before it (zeros, sent after the backward).
        assert result["held"] == [0 if BUCKETED_SPLIT[rank] == 0 else 6 * 5 + 5] * STEPS, rank
        lo, hi = slice_bounds(total, BUCKETED_BUDGETS)[rank]
        assert result["owned"] == hi - lo


SCALED = TrainConfig(optimizer="adamw", lr=0.01, precision="fp16")
OVERFLOW = (2, 2)
"""(step, rank): a gradient element of rank 0's slice made infinite on that rank."""


def _overflow(step: int, rank: int, params: list[nn.Parameter]) -> None:
    grad = params[0].grad
    if (step, rank) == OVERFLOW and grad is not None:
        grad.view(-1)[0] += float("inf")


def _scaled_rank(rank: int, store: str, out: str) -> None:
    world = len(SPLIT)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    model = _model()
    params = list(model.parameters())
    shards = ShardedState(params, rank=rank, world=world, budgets=BUDGETS, stage="gradients")
    step = OptimizerStep(SCALED, make_optimizer(SCALED, [shards.master]), params,
                         torch.device("cpu"), world, STEPS, shards=shards)
    start, skipped = sum(SPLIT[:rank]), []
    for s in range(1, STEPS + 1):
        rows = _batch(s)[start:start + SPLIT[rank]]
        if len(rows):
            step.scale_loss(model(rows).pow(2).sum()).backward()
        _overflow(s, rank, params)
        shards.reduce_gradients()
        skipped.append(step.step(s, float(sum(SPLIT))).skipped)
    torch.save({"params": [p.detach().clone() for p in params], "skipped": skipped},
               f"{out}/rank-{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def _scaled_replicated() -> tuple[list[torch.Tensor], list[bool]]:
    model, world = _model(), len(SPLIT)
    params = list(model.parameters())
    step = OptimizerStep(SCALED, make_optimizer(SCALED, params), params, torch.device("cpu"),
                         world, STEPS)
    skipped = []
    for s in range(1, STEPS + 1):
        grads = []
        for rank in range(world):
            start = sum(SPLIT[:rank])
            model.zero_grad(set_to_none=True)
            rows = _batch(s)[start:start + SPLIT[rank]]
            if len(rows):
                step.scale_loss(model(rows).pow(2).sum()).backward()
            _overflow(s, rank, params)
            grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                          for p in params])
        for p, parts in zip(params, zip(*grads, strict=True), strict=True):
            p.grad = (parts[0] + parts[2]) / world
        skipped.append(step.step(s, float(sum(SPLIT))).skipped)
    return [p.detach().clone() for p in params], skipped


@pytest.mark.slow  # three processes in a gloo group
def test_an_overflow_in_one_owner_s_slice_skips_the_step_on_every_rank(tmp_path: Path) -> None:
    # fp16's scaler (on the CPU here): the inf lands in rank 0's slice only; every rank must
    # skip the step and lower the scale, as one process does.
    start_group(_scaled_rank, (str(tmp_path / "store"), str(tmp_path)), len(SPLIT))
    expected, skipped = _scaled_replicated()
    assert skipped == [False, True, False, False]
    for rank in range(len(SPLIT)):
        result = torch.load(tmp_path / f"rank-{rank}.pt")
        assert result["skipped"] == skipped, rank
        for got, want in zip(result["params"], expected, strict=True):
            assert (got - want).abs().max().item() <= 1e-6 * want.abs().max().item()


COMMON = ("--model", "simple_cnn", "--dataset", "synthetic_image", "--samples", "256",
          "--global-batch", "16", "--steps", "6", "--seed", "3", "--lr", "0.05",
          "--momentum", "0.9", "--clip-grad", "1.0", "--checkpoint-every", "3")


@pytest.mark.slow  # trainer ranks
def test_a_sharded_run_trains_the_parameters_of_a_replicated_one_and_of_one_process(
        tmp_path: Path) -> None:
    runs = {}
    flags: tuple[str, ...]
    for name, nproc, flags in (
            ("one", 1, ()), ("replicated", 3, ("--split", "4,0,12")),
            ("optimizer", 3, ("--split", "4,0,12", "--shard-state", "optimizer",
                              "--state-budget", "1,2,4")),
            ("gradients", 3, ("--split", "0,4,12", "--shard-state", "gradients",
                              "--state-budget", "4,2,1"))):
        check(launch(nproc, *COMMON, *flags, "--run-dir", str(tmp_path / name)))
        runs[name] = final_params(tmp_path / name)
    assert max_rel_diff(runs["replicated"], runs["optimizer"]) <= 1e-6
    for name in ("optimizer", "gradients"):  # any split of the batch and of the state
        assert max_rel_diff(runs["one"], runs[name]) <= 1e-6, name
    # Its checkpoint holds the whole optimizer state: a resume re-slices it for other
    # budgets and stage, or loads it replicated.
    for name, flags in (("resliced", ("--shard-state", "gradients", "--state-budget", "4,1,1")),
                        ("unsharded", ())):
        shutil.copytree(tmp_path / "optimizer", tmp_path / name)
        cut_back_to(tmp_path / name, 3)
        check(launch(3, *COMMON, "--split", "4,0,12", *flags, "--resume",
                     "--run-dir", str(tmp_path / name)))
        assert max_rel_diff(runs["replicated"], final_params(tmp_path / name)) <= 1e-6, name
