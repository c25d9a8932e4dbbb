"""Tasks: what the trainer trains. The loop knows nothing else about the workload.

A task gives the trainer a model, a training dataset, how to collate items into a batch and
how to compute the loss of a batch as a SUM over its loss units together with their count
(samples for classification, target tokens for a language model). The trainer divides the
summed gradient by the global count of units of the step, so any split of the global batch
gives the same parameters as one process.

Built-in tasks are ``image`` (trainer/tasks/image/__init__.py) and ``causal_lm``
(trainer/tasks/causal_lm.py); a user task is a Python file with ``def build(options) -> Task``
(trainer/tasks/user.py). docs/tasks.md documents the interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from trainer.settings.train_config import BUILTIN_TASKS

__all__ = ["BUILTIN_TASKS", "Dataset", "Task", "trainable_parameters"]


class Dataset(Protocol):
    """What the trainer needs of a dataset: a length and items by index.

    A dataset may also have ``batch_of(indices: LongTensor)``, returning the tuple of tensors
    torch's default collate would make of those items: with the default collate the trainer
    then indexes a rank's share at once (trainer/step/batches.py). torch's ``TensorDataset``
    is indexed so too."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


LossFn = Callable[[nn.Module, Any], "tuple[torch.Tensor, int | torch.Tensor]"]
"""``loss(model, batch) -> (loss_sum, count)``: the loss summed over the batch's loss units
and how many units that is."""
EvaluateFn = Callable[[nn.Module, Any], "dict[str, float]"]
"""``evaluate(model, batch) -> {name: sum}``: held-out metric sums for one batch."""
SaveFinalFn = Callable[[nn.Module, Path], None]
"""``save_final(model, directory)``: write the trained result in its users' format."""
SamplesFn = Callable[[nn.Module], "list[tuple[str, str]]"]
"""``samples(model) -> [(prompt, generated text)]``: what the trained model writes."""


@dataclass(frozen=True)
class Task:
    """One training workload: everything the trainer needs to know about it."""

    model: nn.Module
    """The network to train (built identically on every rank: the trainer seeds torch first)."""
    train_data: Dataset
    """Training items: ``len(train_data)`` and ``train_data[i]``."""
    loss: LossFn
    """``loss(model, batch) -> (loss_sum, count)``: the loss SUMMED over the batch's loss
    units, and how many units that is. ``model`` is the trainer's wrapped model: call it; its
    attributes are on ``model.module``."""
    collate: Callable[[list[Any]], Any] | None = None
    """Turns a list of items into a batch; None = torch's default collate."""
    eval_data: Dataset | None = None
    """Held-out items for evaluation (optional)."""
    evaluate: EvaluateFn | None = None
    """``evaluate(model, batch) -> {name: sum}`` for held-out metrics (optional)."""
    parameters: Iterable[nn.Parameter] | None = None
    """What the optimizer trains; None = every parameter that requires a gradient."""
    save_final: SaveFinalFn | None = None
    """Writes the trained result into ``RUN_DIR/final`` at the end of a completed run
    (optional; without it the trainer writes ``final/model.pt``, the model's state dict)."""
    item_tokens: Sequence[int] | None = None
    """Each training item's compute in tokens (variable-length items without packing). Given,
    the balancing policies (proportional, dynamic) share each step's tokens, not its item
    count: the split is then each rank's share of the step's tokens."""
    padded: bool = False
    """``collate`` pads a batch to its longest item: a rank's compute is then its items times
    the longest one's tokens (what token-balanced shares share out), not their sum."""
    samples: SamplesFn | None = None
    """Generations of the trained model from a few held-out prompts, written by rank 0 at the
    end of a completed run as a ``samples`` event (optional)."""


def trainable_parameters(task: Task) -> list[nn.Parameter]:
    """What the optimizer sees: ``task.parameters``, or every parameter requiring a gradient."""
    if task.parameters is not None:
        return list(task.parameters)
    return [p for p in task.model.parameters() if p.requires_grad]
