"""Collectives over flattened tensors: one call per dtype instead of one per tensor.

``all_reduce_mean`` is the explicit gradient all-reduce of a step whose split holds a 0 (over
the active ranks' group, trainer/step/exchange.py); ``BufferSync`` keeps the buffers (BatchNorm
statistics) equal to an active rank's; ``broadcast_buffers`` is the broadcast both use, and the
active set's replica copy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

ALONE = "alone"
"""The process group of an active set of one rank: there is none, and nothing is exchanged."""


def _alone(process_group: Any) -> bool:
    return process_group is ALONE or dist.get_world_size(process_group) == 1


def all_reduce_mean(parameters: Sequence[nn.Parameter], world: int,
                    process_group: Any = None) -> None:
    """Every parameter's gradient summed over ``process_group``'s ranks (None: the world) and
    divided by ``world`` (a missing one counts as zero), one all-reduce per dtype: what DDP's
    reducer does, for steps where some rank has no backward."""
    alone = _alone(process_group)
    for group in _by_dtype(parameters):
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in group]
        if alone:  # one active rank: its gradient is the sum; no flattening, no collective
            if world > 1:
                torch._foreach_div_(grads, float(world))
            for p, grad in zip(group, grads, strict=True):
                p.grad = grad
            continue
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=process_group)
        flat.div_(world)
        for p, chunk in zip(group, _unflatten(flat, group), strict=True):
            p.grad = chunk


class BufferSync:
    """Keeps every rank's buffers equal to rank 0's, paying a broadcast only after a step that
    changed one.

    A change is found by comparing with a copy taken at the last sync: in-place kernels (the
    BatchNorm statistics) do not bump a tensor's version counter, so versions cannot tell. The
    comparison runs on the device, one flattened copy per dtype, and its answer is a device
    tensor that travels in the step's tally (trainer/step/tally.py): no host read of its own.
    DDP has broadcast rank 0's buffers when it wrapped the model, and a resumed run loads the
    same checkpoint on every rank, so the ranks start equal.
    """

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.groups = list(_by_dtype(list(model.buffers())))
        self.synced = [_flat(group) for group in self.groups]
        # The rank's device, not the buffers': a model without buffers still answers on the
        # device the rest of the step's tally lives on.
        self.device = device

    def changed(self) -> torch.Tensor:
        """Has a buffer of this rank changed since the last sync (NaN counts as changed)? A 0-d
        bool tensor on the rank's device."""
        differs = [(_flat(group) != copy).any() for group, copy in zip(self.groups, self.synced,
                                                                      strict=True)]
        if not differs:
            return torch.zeros((), dtype=torch.bool, device=self.device)
        return torch.stack(differs).any()

    def sync(self, src: int = 0, process_group: Any = None) -> None:
        """Rank ``src``'s buffers on every rank of ``process_group`` (None: the world;
        collective: each of its ranks calls it at the same step; ``src`` is an active rank).
        A group of one rank sends nothing: there is nobody to tell."""
        if _alone(process_group):
            self.synced = [_flat(group) for group in self.groups]
            return
        broadcast_buffers([b for group in self.groups for b in group], src, process_group)
        self.synced = [_flat(group) for group in self.groups]


def _flat(group: Sequence[torch.Tensor]) -> torch.Tensor:
    """A group's buffers as one new flat tensor (a copy)."""
    return torch.cat([b.detach().reshape(-1) for b in group])


def broadcast_buffers(buffers: Sequence[torch.Tensor], src: int = 0,
                      process_group: Any = None) -> None:
    """Rank ``src``'s ``buffers`` on every rank of ``process_group`` (None: the world; ``src``
    is a global rank; one broadcast per dtype; nothing without buffers)."""
    for group in _by_dtype(buffers):
        flat = torch.cat([b.detach().reshape(-1) for b in group])
        dist.broadcast(flat, src=src, group=process_group)
        with torch.no_grad():
            for b, chunk in zip(group, _unflatten(flat, group), strict=True):
                b.copy_(chunk)


def _by_dtype(tensors: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    yield from groups.values()


def _unflatten(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
    offset = 0
    for t in like:
        yield flat[offset:offset + t.numel()].view_as(t)
        offset += t.numel()
