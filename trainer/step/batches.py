"""A rank's batch for a step: its slice of the global batch, collated and on its device."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import default_collate

from trainer.step.batch_order import GlobalBatchOrder
from trainer.tasks import Task


def local_batch(task: Task, order: GlobalBatchOrder, step: int, split: Sequence[int],
                rank: int, device: torch.device) -> Any:
    """This rank's slice of step ``step``'s global batch, collated, on ``device``."""
    indices = order.local_indices(step, split, rank).tolist()
    return collated(task, indices, device)


def collated(task: Task, indices: Sequence[int], device: torch.device) -> Any:
    """``task.collate`` (default: torch's) of the items at ``indices``, on ``device``."""
    return move_to(collate(task, [task.train_data[i] for i in indices]), device)


def collate(task: Task, items: list[Any]) -> Any:
    """``items`` made into one batch by ``task.collate`` (default: torch's)."""
    return (task.collate or default_collate)(items)


def move_to(batch: Any, device: torch.device) -> Any:
    """Every tensor in ``batch`` (tensors, tuples, lists, dicts of them) on ``device``."""
    return map_tensors(batch, lambda t: t.to(device, non_blocking=True))


def map_tensors(batch: Any, change: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``batch`` (tensors, tuples, lists, dicts of them) with ``change`` applied to every
    tensor."""
    if isinstance(batch, torch.Tensor):
        return change(batch)
    if isinstance(batch, Mapping):
        return type(batch)({k: map_tensors(v, change) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
        return type(batch)(*(map_tensors(v, change) for v in batch))
    if isinstance(batch, tuple | list):
        return type(batch)(map_tensors(v, change) for v in batch)
    return batch
