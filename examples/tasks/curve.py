"""A complete user task for corral: a small MLP learns a noisy curve.

Run it on two local ranks (from the repository root, with the Python corral is installed in,
``.venv/bin/python`` after the README's quick start):

    .venv/bin/python -m torch.distributed.run --standalone --nproc-per-node 2 -m trainer \
        --task examples/tasks/curve.py:build --task-option samples=2048 \
        --global-batch 64 --steps 100 --lr 0.05 --run-dir runs/curve

or from a cluster.toml: ``[run] task = "tasks/curve.py:build"`` and ``[run.task_options]``.
The trainer calls ``build`` on every rank after seeding torch, so the model is the same
everywhere; the data must be too (here: a function of the ``seed`` option).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.tasks import Task


class CurveData:
    """``samples`` points (x, y) with y = sin(3x) + x^2/2 + noise; a pure function of seed."""

    def __init__(self, samples: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(samples, 1, generator=g) * 2 * math.pi - math.pi
        noise = 0.05 * torch.randn(samples, 1, generator=g)
        self.y = torch.sin(3 * self.x) + self.x**2 / 2 + noise

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]


def squared_error(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
                  ) -> tuple[torch.Tensor, int]:
    """The loss SUMMED over the batch's samples, and how many samples that is."""
    x, y = batch
    return ((model(x) - y) ** 2).sum(), len(y)


def metrics(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """Held-out sums and their count: the trainer reports each sum divided by the count
    (``loss_sum`` as ``loss``, ``abs_error_sum`` as ``abs_error``, the mean absolute error)."""
    x, y = batch
    error = model(x) - y
    return {"loss_sum": float((error**2).sum()), "abs_error_sum": float(error.abs().sum()),
            "count": float(len(y))}


def build(options: dict) -> Task:
    """The task; ``options`` come from [run.task_options] or --task-option KEY=VALUE."""
    unknown = set(options) - {"samples", "hidden", "seed"}
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}")
    samples = int(options.get("samples", 4096))
    hidden = int(options.get("hidden", 64))
    seed = int(options.get("seed", 0))
    model = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                          nn.Linear(hidden, 1))
    return Task(model=model, train_data=CurveData(samples, seed), loss=squared_error,
                eval_data=CurveData(512, seed + 1), evaluate=metrics)
