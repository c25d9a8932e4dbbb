"""Data-parallel training of a linear regression with PyTorch DDP, in the classic tutorial's
shape: random data, one ``nn.Linear``, SGD. ``ddp_tutorial_plain.py`` is the plain script;
``ddp_tutorial.py`` adds corral's helper for exact uneven shares (five lines differ). Both keep
the order of the PyTorch examples' DDP tutorial: the loader is built before the DDP module, and
each epoch starts with ``loader.sampler.set_epoch(epoch)``::

    torchrun --nproc-per-node 3 examples/scripts/ddp_tutorial.py --out model.pt
"""

import argparse

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler


def main() -> None:
    p = argparse.ArgumentParser(description="linear regression with DDP")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=96, help="global: over all ranks")
    p.add_argument("--samples", type=int, default=1024)
    p.add_argument("--out", default="model.pt")
    args = p.parse_args()
    dist.init_process_group("gloo")
    world = dist.get_world_size()

    torch.manual_seed(0)  # the same data and initial model on every rank
    dataset = TensorDataset(torch.randn(args.samples, 20), torch.randn(args.samples, 1))
    model = nn.Linear(20, 1)
    sampler = DistributedSampler(dataset, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=args.batch_size // world, sampler=sampler)
    model = DDP(model)  # the tutorial's order: the loader first, then the DDP module
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.MSELoss()

    for epoch in range(args.epochs):
        batch_size = len(next(iter(loader))[0])  # the tutorial looks at one batch first
        print(f"[rank {dist.get_rank()}] epoch {epoch} | batch {batch_size} | "
              f"steps {len(loader)}")
        loader.sampler.set_epoch(epoch)
        for inputs, targets in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
        if dist.get_rank() == 0:
            print(f"epoch {epoch}: loss {loss.item():.4f} on {world} ranks")

    if dist.get_rank() == 0:
        torch.save(model.module.state_dict(), args.out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
