# ruff: noqa: E501 (the field cases verbatim, as users wrote them)
"""The field cases of plain scripts (issue 82, ``shared/field/scripts``), verbatim: inputs that
stand for what torchrun users report, each run by ``test_plain_field_local.py``."""

from __future__ import annotations

UNEVEN_EPOCH = """\
# Case: ranks hold different numbers of batches (a sharded dataset that does not divide evenly).
# The last rank has one batch fewer; without --join the others block in the extra backward.
import argparse
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

p = argparse.ArgumentParser()
p.add_argument("--join", action="store_true", help="wrap the loop in DDP's join()")
a = p.parse_args()
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(rank)
nbatches = 6 - (1 if rank == world - 1 else 0)
batches = [torch.randn(4, 8) for _ in range(nbatches)]
model = DDP(torch.nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)

def loop():
    for i, x in enumerate(batches):
        loss = model(x).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        print(f"rank {rank}: batch {i+1}/{nbatches} loss {loss.item():.4f}", flush=True)

if a.join:
    with model.join():
        loop()
else:
    loop()
print(f"rank {rank}: epoch over", flush=True)
dist.barrier()
if rank == 0:
    print("rank 0: all ranks finished", flush=True)
dist.destroy_process_group()
"""

OWN_TIMEOUT = """\
# Case: the script chooses its own process-group timeout (init_process_group(timeout=...)).
# Rank 0 "prepares data" for --prep seconds while the others wait at a barrier, then a few DDP steps.
import argparse, datetime, os, time
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

p = argparse.ArgumentParser()
p.add_argument("--timeout", type=float, default=10.0, help="process group timeout, seconds")
p.add_argument("--prep", type=float, default=30.0, help="rank 0's preparation, seconds")
a = p.parse_args()
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=a.timeout))
rank = dist.get_rank()
print(f"rank {rank}: group up, timeout asked {a.timeout}s", flush=True)
t0 = time.time()
if rank == 0:
    time.sleep(a.prep)   # stands for tokenising a corpus once
    print("rank 0: data ready", flush=True)
dist.barrier()
print(f"rank {rank}: passed barrier after {time.time()-t0:.1f}s", flush=True)
model = DDP(torch.nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(5):
    loss = model(torch.randn(8, 4)).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
print(f"rank {rank}: done", flush=True)
dist.destroy_process_group()
"""

RANK0_CHECKPOINT = """\
# Case: rank 0 alone writes the best checkpoint into a relative folder; after a barrier every
# rank loads it back (to evaluate it, or to go on from it).
import os
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("gloo")
rank = dist.get_rank()
model = DDP(torch.nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for _ in range(5):
    loss = model(torch.randn(4, 8)).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
if rank == 0:
    os.makedirs("ckpt", exist_ok=True)
    torch.save(model.module.state_dict(), "ckpt/best.pt")
    print("rank 0: saved ckpt/best.pt", flush=True)
dist.barrier()
state = torch.load("ckpt/best.pt")
model.module.load_state_dict(state)
print(f"rank {rank}: loaded ckpt/best.pt, weight sum {sum(float(v.sum()) for v in state.values()):.6f}", flush=True)
dist.destroy_process_group()
"""

SPAWN_WORKERS = """\
# Case: a script that starts its own workers with torch.multiprocessing.spawn and sets the
# rendezvous address itself (the pre-torchrun way), run by a launcher with one process per node.
import os
import torch, torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

def worker(rank, world):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = "29533"
    os.environ.pop("TORCHELASTIC_USE_AGENT_STORE", None)  # the workers form their own group
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = DDP(torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(20):
        loss = model(torch.randn(4, 8)).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    print(f"worker {rank}/{world}: trained 20 steps, last loss {loss.item():.4f}", flush=True)
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(worker, args=(2,), nprocs=2, join=True)
    print("all workers finished", flush=True)
"""
