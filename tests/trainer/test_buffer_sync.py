"""Buffers stay equal to rank 0's, and a model whose buffers never change pays no broadcast."""

from __future__ import annotations

import torch
from torch import nn

from trainer.step.flat_collectives import BufferSync


def test_a_model_without_buffers_answers_on_the_ranks_device() -> None:
    """The answer joins the step's tally on the rank's device (a CUDA rank's simple_cnn with
    GroupNorm has no buffer): the "meta" device stands in for a GPU here."""
    meta = torch.device("meta")
    assert BufferSync(nn.Linear(4, 4), meta).changed().device == meta
