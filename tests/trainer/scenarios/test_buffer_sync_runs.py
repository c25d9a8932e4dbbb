"""The runs (slow tier) of what ``tests/trainer/test_buffer_sync.py`` tests: buffers stay equal to
rank 0's, and a model whose buffers never change pays no broadcast."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from trainer_runs import start_group

from trainer.step.flat_collectives import BufferSync, all_reduce_mean

CPU = torch.device("cpu")


class RotaryLike(nn.Module):
    """A constant buffer, as a language model's rotary frequency table."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.register_buffer("inv_freq", torch.arange(4.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.inv_freq


def _rank(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)
    batch_norm, rotary = nn.BatchNorm1d(4), RotaryLike()
    bn_sync, rotary_sync = BufferSync(batch_norm, CPU), BufferSync(rotary, CPU)
    before = bool(bn_sync.changed()), bool(rotary_sync.changed())

    # Each rank sees different data, as in a step: BatchNorm's running statistics diverge.
    batch_norm(torch.randn(8, 4) * (rank + 1) + rank)
    rotary(torch.randn(8, 4)).sum().backward()
    after_forward = bool(bn_sync.changed()), bool(rotary_sync.changed())
    bn_sync.sync()
    after_sync = bool(bn_sync.changed())
    torch.save({"before": before, "after_forward": after_forward, "after_sync": after_sync,
                "buffers": {k: v.clone() for k, v in batch_norm.state_dict().items()}},
               f"{out}/rank-{rank}.pt")
    dist.barrier()  # leave together (see tests/trainer/lowcomm_outer_check.py)
    dist.destroy_process_group()


@pytest.mark.slow  # two processes in a gloo group
def test_changed_buffers_become_rank_0s_and_constant_ones_cost_nothing(tmp_path: Path) -> None:
    start_group(_rank, (str(tmp_path / "store"), str(tmp_path)), 2)
    results = [torch.load(tmp_path / f"rank-{r}.pt") for r in (0, 1)]
    for result in results:
        assert result["before"] == (False, False)
        # BatchNorm's statistics changed (its in-place kernel leaves the version counter
        # alone, so only a comparison sees it); the rotary table did not: no broadcast.
        assert result["after_forward"] == (True, False)
        assert result["after_sync"] is False
    rank0, rank1 = (r["buffers"] for r in results)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(rank0[name], rank1[name]), name


def _alone_in_its_set(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=3)
    alone = dist.new_group([1])  # the active set of split 0,B,0 (every rank makes it)
    if rank == 1:
        calls: list[str] = []
        for name in ("all_reduce", "broadcast", "all_gather"):
            original = getattr(dist, name)
            setattr(dist, name, lambda *a, _n=name, _o=original, **k: (calls.append(_n),
                                                                        _o(*a, **k))[1])
        torch.manual_seed(0)
        batch_norm = nn.BatchNorm1d(4)
        batch_norm(torch.randn(8, 4)).square().sum().backward()
        own = [p.grad.clone() for p in batch_norm.parameters()]
        all_reduce_mean(list(batch_norm.parameters()), 3, alone)
        sync = BufferSync(batch_norm, CPU)
        batch_norm(torch.randn(8, 4))
        sync.sync(1, alone)
        torch.save({"calls": calls, "own": own, "after": [p.grad for p in batch_norm.parameters()],
                    "changed": bool(sync.changed())}, f"{out}/alone.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow  # three processes in a gloo group
def test_a_rank_alone_in_its_active_set_exchanges_nothing(tmp_path: Path) -> None:
    start_group(_alone_in_its_set, (str(tmp_path / "store"), str(tmp_path)), 3)
    result = torch.load(tmp_path / "alone.pt")
    assert result["calls"] == []  # no gradient all-reduce, no buffer broadcast
    for own, after in zip(result["own"], result["after"], strict=True):
        assert torch.equal(after, own / 3)  # DDP's sum over ranks divided by the world
    assert result["changed"] is False  # the sync took the new statistics as the reference
