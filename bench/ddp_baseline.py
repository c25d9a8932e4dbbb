"""A bare DDP training loop: the reference corral's trainer is measured against.

Same model, data, global batch and optimizer as ``python -m trainer`` with an equal split, but
nothing else: no events, no balancer, no compute timing, no per-step all-gather. Run it with
torch's launcher; rank 0 prints one JSON line with its throughput between two steps (and the
wall-clock times of those two steps, for a sampler of the GPU to cut its window).

``--device cuda``: NCCL, one GPU per rank, each batch put in pinned host memory and copied with
``non_blocking``, ``--precision bf16`` under autocast; fp32 with TF32 off (as corral's fp32).

    python -m torch.distributed.run --standalone --nproc-per-node 2 bench/ddp_baseline.py \\
        --global-batch 64 --steps 60 --skip 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from trainer.tasks.image.data import synthetic_image
from trainer.tasks.image.models import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="simple_cnn")
    p.add_argument("--norm", default="group")
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--global-batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--skip", type=int, default=10, help="steps before the clock starts")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    device = _device(args.device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    data = synthetic_image(args.samples, args.seed)
    torch.manual_seed(args.seed)
    model = DDP(build_model(args.model, data.num_classes, args.norm).to(device),
                device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16"
                else contextlib.nullcontext())
    local = args.global_batch // world
    steps_per_epoch = len(data) // args.global_batch

    t_start, perm_epoch, perm = 0.0, -1, torch.empty(0, dtype=torch.int64)
    for step in range(args.steps):
        epoch, pos = divmod(step, steps_per_epoch)
        if epoch != perm_epoch:  # one shuffle per epoch, as the trainer does
            perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch))
            perm_epoch = epoch
        start = pos * args.global_batch + rank * local
        x, y = (_to(t, device) for t in data.batch_of(perm[start : start + local]))
        with autocast:
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step + 1 == args.skip:
            t_start = _now(device)
    t_end = _now(device)
    elapsed = t_end - t_start
    if rank == 0:
        measured = args.steps - args.skip
        print(json.dumps({"samples_per_s": measured * args.global_batch / elapsed,
                          "steps": measured, "seconds": elapsed, "t_start": t_start,
                          "t_end": t_end, "pid": os.getpid()}))
    dist.destroy_process_group()


def _device(requested: str) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 (bf16 runs under autocast)
    torch.backends.cuda.matmul.allow_tf32 = False
    return device


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """On ``device``; on CUDA from pinned memory, asynchronously."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def _now(device: torch.device) -> float:
    """The wall clock once the device has finished what was queued (a GPU runs behind)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.time()


if __name__ == "__main__":
    main()
