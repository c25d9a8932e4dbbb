"""``--precision auto`` on a rank: bf16 on a GPU that supports it, fp16 (with the loss scaler)
on an older GPU, fp32 on the CPU; ``tf32`` only on a GPU of compute capability 8.0+, fp32
elsewhere. GPU capability is faked (no GPU here)."""

from __future__ import annotations

import pytest
import torch

from trainer.settings.train_config import TrainConfig
from trainer.settings.training_checks import resolve_precision
from trainer.step.optim import OptimizerStep


@pytest.mark.parametrize(("bf16_capable", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_a_gpu_follows_its_bf16_support(monkeypatch: pytest.MonkeyPatch,
                                                 bf16_capable: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_capable)
    assert resolve_precision("auto", torch.device("cuda", 0)) == expected


def test_auto_on_the_cpu_is_fp32_and_a_given_precision_is_kept() -> None:
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_fp16_chosen_by_auto_gets_the_loss_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    chosen = resolve_precision("auto", torch.device("cuda", 0))
    config = TrainConfig(precision=chosen)
    param = torch.nn.Parameter(torch.zeros(1))
    step = OptimizerStep(config, torch.optim.SGD([param], lr=0.1), [param],
                         torch.device("cpu"), 1, 10)
    assert step.scaler is not None


@pytest.mark.parametrize(("capability", "expected"), [((8, 0), "tf32"), ((9, 0), "tf32"),
                                                      ((7, 5), "fp32"), ((6, 1), "fp32")])
def test_tf32_on_a_gpu_follows_its_compute_capability(
        monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: capability)
    assert resolve_precision("tf32", torch.device("cuda", 0)) == expected


def test_tf32_on_the_cpu_is_fp32() -> None:
    assert resolve_precision("tf32", torch.device("cpu")) == "fp32"
