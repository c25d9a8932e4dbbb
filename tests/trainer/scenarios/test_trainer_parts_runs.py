"""The runs (slow tier) of what ``tests/trainer/test_trainer_parts.py`` tests: models, slowdown
emulation and checkpoint files."""

from __future__ import annotations

import pytest
import torch

from trainer.tasks.image.models import build_model


@pytest.mark.parametrize("name", ["simple_cnn", *(pytest.param(big, marks=pytest.mark.slow)
                                                  for big in ("resnet18", "resnet50"))])
def test_models_classify_32x32_images(name: str) -> None:
    model = build_model(name, 10, "group" if name == "simple_cnn" else "batch")
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
