"""A rank alone in its active set: what its gradient exchange costs, before and after.

One process in a one-rank gloo world holds resnet18's gradients (CIFAR layout, 11.2 M
parameters) on the CPU. Side A is what a one-rank active set did before: one flattened copy per
dtype, an all-reduce over a group of one, the division by the world size, the views put back.
Side B is ``trainer.step.flat_collectives.all_reduce_mean`` now: the division in place, no
copy, no collective. The sides alternate, ``--rounds`` times ``--repeats`` calls each; the
result is each side's median seconds per call and the ratio A / B.

    python bench/alone_exchange.py --rounds 5 --repeats 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from trainer.step.flat_collectives import all_reduce_mean  # noqa: E402
from trainer.tasks.image.models import build_model  # noqa: E402

WORLD = 3
"""The world size the division uses (a rank alone beside two benched ones)."""


def flattened_over_a_group_of_one(parameters: list[torch.nn.Parameter], group: object) -> None:
    """Side A: the exchange a one-rank active set ran before (one dtype here)."""
    grads = [p.grad for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])  # type: ignore[union-attr]
    dist.all_reduce(flat, group=group)  # type: ignore[arg-type]
    flat.div_(WORLD)
    offset = 0
    for p in parameters:
        p.grad = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as store:
        dist.init_process_group("gloo", init_method=f"file://{Path(store) / 'store'}",
                                rank=0, world_size=1)
        group = dist.new_group([0])
        parameters = list(build_model("resnet18", 10, "batch").parameters())
        for p in parameters:
            p.grad = torch.randn_like(p)
        sides = {
            "A flattened, all-reduce over a group of one":
                lambda: flattened_over_a_group_of_one(parameters, group),
            "B all_reduce_mean, alone": lambda: all_reduce_mean(parameters, WORLD, group),
        }
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        for round_ in range(args.rounds):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for name in order:
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    sides[name]()
                    seconds[name].append(time.perf_counter() - started)
        dist.destroy_process_group()
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    for name, median in medians.items():
        spread = statistics.quantiles(seconds[name], n=10)
        print(f"{name}: median {median * 1000:.2f} ms per call "
              f"(10th-90th percentile {spread[0] * 1000:.2f}-{spread[-1] * 1000:.2f} ms)")
    a, b = medians.values()
    print(f"A / B = {a / b:.1f}x  ({os.cpu_count()} cores, {args.threads} thread, "
          f"torch {torch.__version__}, {args.rounds} rounds x {args.repeats} calls, interleaved)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
