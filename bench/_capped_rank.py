"""One rank of a pooled-memory run (tests/trainer/scenarios/test_pooled_memory.py,
bench/pooled_memory.py): corral's optimizer step (trainer/step/optim.py) over an MLP of
``layers`` square ``width`` layers, replicated or sharded (``shard_state``), in a gloo group of
its own (file store), each rank given its rows of a fixed global batch.

``python -m bench._capped_rank SPEC`` (SPEC: JSON, see ``main``). Mode ``reference`` is one
process doing every rank's passes in rank order (its gradient the exchange's sum) with the
whole state: the parameters it ends with are written raw (float32) to ``spec["reference"]``.
Any other rank compares its final parameters with that file, in chunks (no second copy in its
memory), and writes its result as JSON to ``spec["result"]``: its slice, budget, state bytes,
peak RSS, step times and the largest difference from the reference.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from trainer.settings.train_config import TrainConfig
from trainer.step.optim import OptimizerStep, optimizer_step, state_fields

CHUNK = 1 << 22
"""Elements compared at a time with the reference file (16 MB)."""


def build(width: int, layers: int) -> nn.Module:
    """The model, the same on every rank (seed 0): ``layers`` × (Linear(width, width), Tanh)."""
    torch.manual_seed(0)
    parts: list[nn.Module] = []
    for _ in range(layers):
        parts += [nn.Linear(width, width), nn.Tanh()]
    return nn.Sequential(*parts)


def rows(step: int, split: list[int], rank: int, width: int) -> torch.Tensor:
    """Rank ``rank``'s rows of step ``step``'s global batch."""
    batch = torch.randn(sum(split), width, generator=torch.Generator().manual_seed(step))
    start = sum(split[:rank])
    return batch[start:start + split[rank]]


def backward(model: nn.Module, x: torch.Tensor) -> None:
    if len(x):
        model(x).pow(2).sum().backward()


def exchange(optim: OptimizerStep, world: int) -> None:
    """The step's gradient exchange: sharded, the owners' slices; replicated, an all-reduce
    of the whole flat gradient (as DDP's buckets), divided by the world (DDP's mean)."""
    if optim.shards is not None:
        optim.shards.reduce_gradients()
        return
    params = optim.parameters
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if world > 1:
        flat = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            assert p.grad is not None
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
    for p in params:
        assert p.grad is not None
        p.grad.div_(world)


def compare(params: list[nn.Parameter], reference: Path) -> tuple[float, float]:
    """(largest |difference|, largest |reference value|) over every parameter, read from the
    reference file in chunks (no second copy of the parameters in memory)."""
    worst, scale = 0.0, 0.0
    with reference.open("rb") as file:
        for p in params:
            flat = p.detach().reshape(-1)
            for lo in range(0, flat.numel(), CHUNK):
                hi = min(lo + CHUNK, flat.numel())
                want = torch.frombuffer(bytearray(file.read((hi - lo) * 4)),
                                        dtype=torch.float32)
                worst = max(worst, (flat[lo:hi] - want).abs().max().item())
                scale = max(scale, want.abs().max().item())
    return worst, scale


def main(spec: dict[str, Any]) -> None:
    """``spec``: rank, world, split (rows per rank), steps, width, layers, shard_state, store
    (a file path), reference (path), result (path), budgets (GiB per rank, or absent:
    measured)."""
    rank, world, split = spec["rank"], spec["world"], spec["split"]
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{spec['store']}", rank=rank,
                                world_size=world)
    model = build(spec["width"], spec["layers"])
    params = list(model.parameters())
    budgets = spec.get("budgets")
    reference = spec["shard_state"] == "reference"
    config = TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.1,
                         shard_state="replicate" if reference else spec["shard_state"],
                         state_budget=None if budgets is None else (budgets[rank],))
    optim = optimizer_step(config, params, rank=0 if reference else rank,
                           world=len(split) if reference else world,
                           device=torch.device("cpu"), total_steps=spec["steps"])
    times = []
    for step in range(1, spec["steps"] + 1):
        began = time.perf_counter()
        if reference:  # every rank's rows in rank order: the exchange's sum
            for r in range(len(split)):
                backward(model, rows(step, split, r, spec["width"]))
            for p in params:
                assert p.grad is not None
                p.grad.div_(len(split))
        else:
            if optim.shards is not None:
                optim.shards.arm()  # stage 2: each bucket reduced and freed during the backward
            backward(model, rows(step, split, rank, spec["width"]))
            exchange(optim, world)
        optim.step(step, float(sum(split)))
        times.append(time.perf_counter() - began)
    result: dict[str, Any] = {"rank": rank, "step_s": times,
                              "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                              * 1024,
                              **state_fields(config, optim, rank, torch.device("cpu"))}
    if optim.shards is not None:
        result["owned"] = optim.shards.owned
    if reference:
        torch.cat([p.detach().reshape(-1) for p in params]).numpy().tofile(spec["reference"])
    elif spec.get("reference"):
        result["max_diff"], result["max_ref"] = compare(params, Path(spec["reference"]))
    Path(spec["result"]).write_text(json.dumps(result))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
