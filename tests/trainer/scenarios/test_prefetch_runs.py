"""The runs (slow tier) of what ``tests/trainer/test_prefetch.py`` tests: batch prefetch: a step
trains on exactly the batch it would have built itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trainer_runs import check, events, final_params, launch, max_rel_diff, of_kind

from trainer.step.batch_order import GlobalBatchOrder
from trainer.step.batches import local_batch
from trainer.step.prefetch import BatchPrefetcher
from trainer.tasks.image import build


@pytest.mark.slow
def test_prefetch_changes_nothing_but_speed(tmp_path: Path) -> None:
    common = ("--samples", "512", "--global-batch", "32", "--steps", "12", "--seed", "3")
    check(launch(2, *common, "--split", "20,12", "--prefetch", "off",
                 "--run-dir", str(tmp_path / "off")))
    # Dynamic with a decision every 2 steps: splits change under the prefetcher.
    check(launch(2, *common, "--split", "28,4", "--policy", "dynamic", "--rebalance-every", "2",
                 "--rebalance-threshold", "0", "--prefetch", "on",
                 "--run-dir", str(tmp_path / "on")))
    assert max_rel_diff(final_params(tmp_path / "off"), final_params(tmp_path / "on")) <= 1e-4
    assert [e["step"] for e in of_kind(events(tmp_path / "on", 1), "step")] == list(range(1, 13))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_copy_runs_on_its_own_stream_and_the_batches_are_the_same() -> None:
    task = build({"model": "simple_cnn", "dataset": "synthetic_image", "samples": 64,
                  "norm": "group", "seed": 1})
    order = GlobalBatchOrder(len(task.train_data), 16, seed=1)
    cuda = torch.device("cuda", 0)
    prefetcher = BatchPrefetcher(task, order, rank=0, device=cuda)
    assert prefetcher.stream is not None and prefetcher.stream != torch.cuda.current_stream(cuda)
    try:
        for step in range(1, 5):
            got = prefetcher.batch(step, (10, 6), last_step=4)
            want = local_batch(task, order, step, (10, 6), 0, cuda)
            assert all(t.device == cuda for t in got)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True)), step
    finally:
        prefetcher.close()
    assert prefetcher.hits == 3
