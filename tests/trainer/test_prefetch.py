"""Batch prefetch: a step trains on exactly the batch it would have built itself."""

from __future__ import annotations

import torch

from trainer.step.batch_order import GlobalBatchOrder
from trainer.step.batches import local_batch
from trainer.step.prefetch import BatchPrefetcher, prefetch_wanted
from trainer.tasks.image import build


def test_prefetched_batches_are_the_ones_each_step_would_build() -> None:
    task = build({"model": "simple_cnn", "dataset": "synthetic_image", "samples": 64,
                  "norm": "group", "seed": 1})
    order = GlobalBatchOrder(len(task.train_data), 16, seed=1)
    cpu = torch.device("cpu")
    prefetcher = BatchPrefetcher(task, order, rank=1, device=cpu)
    splits = [(10, 6)] * 3 + [(12, 4)] * 3  # a rebalance before step 4
    try:
        for step, split in enumerate(splits, start=1):
            got = prefetcher.batch(step, split, last_step=len(splits))
            want = local_batch(task, order, step, split, 1, cpu)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True)), step
    finally:
        prefetcher.close()
    # Ready-made for steps 2, 3, 5, 6; step 1 and the step after the rebalance are built.
    assert prefetcher.hits == 4


def test_auto_prefetches_on_cuda_ranks_only() -> None:
    assert prefetch_wanted("auto", torch.device("cuda", 0))
    assert not prefetch_wanted("auto", torch.device("cpu"))
    assert prefetch_wanted("on", torch.device("cpu"))
    assert not prefetch_wanted("off", torch.device("cuda", 0))
