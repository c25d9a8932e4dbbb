"""A user's DDP script with corral's helper, in the tutorial's shape (a small MLP, SGD with
momentum, so the optimizer's state must travel to a joiner): the script the live-membership
tests and ``bench/membership.py`` run. ``--pause`` stands for a real step's compute (seconds a
step), so that hosts can leave and join while it trains."""

import argparse
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import TensorDataset

from trainer.integrations.ddp import Shares


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--pause", type=float, default=0.0)
    p.add_argument("--out", default="model.pt")
    args = p.parse_args()
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    dataset = TensorDataset(torch.randn(480, 8), torch.randn(480, 1))
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    shares = Shares(len(dataset), global_batch=24, epochs=args.epochs)
    loader = shares.loader(dataset)
    model = DDP(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    for epoch in range(args.epochs):
        loader.sampler.set_epoch(epoch)
        for inputs, targets in loader:
            optimizer.zero_grad()
            loss = shares.loss(nn.functional.mse_loss(model(inputs), targets), model)
            loss.backward()
            optimizer.step()
            time.sleep(args.pause)
    if dist.get_rank() == 0:
        torch.save(model.module.state_dict(), args.out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
