"""Device and backend choice; the CUDA path runs only where a GPU is present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trainer_runs import check, events, launch, of_kind

from profiles.user_errors import UsageError
from trainer.dist import choose_backend, choose_device


def test_auto_backend_is_nccl_on_cuda_and_gloo_on_cpu() -> None:
    assert choose_backend("auto", torch.device("cuda", 0)) == "nccl"
    assert choose_backend("auto", torch.device("cpu")) == "gloo"
    assert choose_backend("gloo", torch.device("cuda", 0)) == "gloo"  # mixed clusters
    with pytest.raises(UsageError, match="--backend nccl needs every rank on a CUDA GPU"):
        choose_backend("nccl", torch.device("cpu"))


def test_cpu_is_used_without_a_gpu_or_when_asked() -> None:
    assert choose_device("cpu", 0) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert choose_device("auto", 3) == torch.device("cpu")
        with pytest.raises(UsageError, match="no CUDA GPU"):
            choose_device("cuda", 0)


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
