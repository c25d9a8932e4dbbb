"""A rank's batch for a step: its slice of the global batch, collated and on its device.

A dataset held in memory as tensors is indexed as a batch, one ``index_select`` per tensor,
instead of item by item and collated: a dataset with a ``batch_of(indices)`` method (corral's
image sets, see trainer/tasks/__init__.py) or torch's ``TensorDataset``, when the task keeps
torch's default collate. The result is the same tensors either way. On CUDA the batch is put
in pinned host memory and copied with ``non_blocking``: a copy from pageable memory would wait
for the device first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import TensorDataset, default_collate

from trainer.step.batch_order import GlobalBatchOrder
from trainer.tasks import Task


def local_batch(task: Task, order: GlobalBatchOrder, step: int, split: Sequence[int],
                rank: int, device: torch.device) -> Any:
    """This rank's slice of step ``step``'s global batch, collated, on ``device``."""
    indices = order.local_indices(step, split, rank).tolist()
    return collated(task, indices, device)


def collated(task: Task, indices: Sequence[int], device: torch.device) -> Any:
    """``task.collate`` (default: torch's) of the items at ``indices``, on ``device``."""
    batch = indexed(task, indices)
    if batch is None:
        batch = collate(task, [task.train_data[i] for i in indices])
    if device.type == "cuda":
        batch = map_tensors(batch, torch.Tensor.pin_memory)
    return move_to(batch, device)


def indexed(task: Task, indices: Sequence[int]) -> Any:
    """The items at ``indices`` indexed as one batch, when the dataset is in-memory tensors
    and the task collates with torch's default; else None."""
    if task.collate is not None:
        return None
    data: Any = task.train_data
    at = torch.as_tensor(list(indices), dtype=torch.int64)
    if callable(getattr(data, "batch_of", None)):
        return list(data.batch_of(at))  # default_collate makes a list of a tuple's fields
    if isinstance(data, TensorDataset):
        return [t.index_select(0, at) for t in data.tensors]
    return None


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
