"""The runs (slow tier) of what ``tests/trainer/test_trainer_devices.py`` tests: device and backend
choice; the CUDA path runs only where a GPU is present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trainer_runs import check, events, final_params, launch, max_rel_diff, of_kind


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_rank_trains_over_nccl(tmp_path: Path) -> None:
    check(launch(1, "--samples", "256", "--global-batch", "32", "--steps", "5",
                 "--model", "resnet18", "--run-dir", str(tmp_path)))
    evts = events(tmp_path, 0)
    start = of_kind(evts, "start")[0]
    assert start["device"].startswith("cuda:") and start["backend"] == "nccl"
    assert all(e["compute_s"] > 0 for e in of_kind(evts, "step"))
    assert evts[-1]["status"] == "completed"


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp32_on_cuda_gives_any_split_the_same_parameters(tmp_path: Path) -> None:
    """Three gloo ranks on one GPU, split 40,16,8, against one process: exact in fp32 because
    TF32 is off (torch's default lets cuDNN use it: about 5e-5 apart after 10 steps)."""
    common = ("--model", "simple_cnn", "--dataset", "synthetic_image", "--samples", "512",
              "--global-batch", "64", "--steps", "10", "--seed", "3", "--lr", "0.05",
              "--momentum", "0.9", "--device", "cuda", "--backend", "gloo")
    one, three = tmp_path / "one", tmp_path / "three"
    check(launch(1, *common, "--split", "64", "--run-dir", str(one)))
    check(launch(3, *common, "--split", "40,16,8", "--run-dir", str(three)))
    for rank in range(3):
        start = of_kind(events(three, rank), "start")[0]
        assert start["device"].startswith("cuda:") and start["backend"] == "gloo"
        assert (start["precision"], start["tf32"]) == ("fp32", False)
    diff = max_rel_diff(final_params(one), final_params(three))
    print(f"fp32 on CUDA, 40,16,8 vs one process after 10 steps: {diff:.2e}")
    assert diff <= 1e-5


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("stage", ["optimizer", "gradients"])
def test_sharded_state_on_cuda_gives_one_process_parameters(tmp_path: Path, stage: str) -> None:
    """Pooled memory on the GPU (issue 85's GPU round): three gloo ranks on one GPU, the
    optimizer state (and, at stage 2, the gradients) sliced by budgets 1:2:4 with a benched
    rank, against one process, in fp32 with TF32 off as the replicated test above."""
    common = ("--model", "simple_cnn", "--dataset", "synthetic_image", "--samples", "512",
              "--global-batch", "64", "--steps", "10", "--seed", "3", "--lr", "0.05",
              "--momentum", "0.9", "--optimizer", "adamw", "--device", "cuda",
              "--backend", "gloo")
    one, three = tmp_path / "one", tmp_path / "three"
    check(launch(1, *common, "--split", "64", "--run-dir", str(one)))
    check(launch(3, *common, "--split", "40,0,24", "--shard-state", stage,
                 "--state-budget", "1,2,4", "--run-dir", str(three)))
    for rank in range(3):
        start = of_kind(events(three, rank), "start")[0]
        assert start["device"].startswith("cuda:") and start["tf32"] is False
    diff = max_rel_diff(final_params(one), final_params(three))
    print(f"sharded ({stage}) on CUDA, 40,0,24, budgets 1:2:4 vs one process: {diff:.2e}")
    assert diff <= 1e-5
