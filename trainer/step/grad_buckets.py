"""Stage 2's gradient exchange during the backward (``shard_state = "gradients"``): each
bucket of gradients is reduced to the owners of its elements as soon as the backward has
produced it, and the bucket's full gradient is then freed, so a rank never holds the whole
model's gradient — only the parameters whole, its own slice of the reduced gradient and the
buckets in flight.

Buckets are runs of consecutive parameters taken from the last one backwards (the backward
produces the last layers' gradients first), each at most ``BUCKET_BYTES`` (DDP's default bucket
size); a bucket is a contiguous range of the flat parameter vector, copied into one buffer — or,
when it is one parameter, that parameter's gradient itself, reduced in place. Bucket ``b`` is
reduced with one ``dist.reduce`` per owner whose slice it crosses, of that piece only, to that
owner (uneven slices: per-owner collectives, gloo and NCCL alike). Collectives are matched by
call order, so buckets go out strictly in their fixed order — a bucket ready early waits for the
ones before it, as DDP's reducer does — and a rank that runs no backward (benched) sends its
zero buckets in the same order from ``finish``.

Exactness: a hook acts only in the rank's last pass of the step (``arm``), after autograd
accumulated that pass into ``.grad``: the bucket holds the rank's whole local gradient, the
sum the replicated exchange reduces, and each element is summed over the ranks by one reduce
as before. Nothing changes for a rank that is never armed (its ``.grad`` is read in
``finish``), only its memory.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

BUCKET_BYTES = 25 * 1024 * 1024
"""The most gradient bytes a bucket holds (DDP's ``bucket_cap_mb`` default; a larger parameter
is a bucket of its own)."""
IN_FLIGHT = 2
"""Buckets whose reduces may be in flight at once; beyond, the oldest is waited for (each
holds a bucket-sized buffer)."""


def bucket_runs(sizes: Sequence[int], cap: int) -> list[list[int]]:
    """Parameter indices in buckets, from the last parameter backwards: each bucket a run of
    consecutive indices (descending) of at most ``cap`` elements (a larger parameter is a
    bucket of its own)."""
    buckets: list[list[int]] = []
    current: list[int] = []
    held = 0
    for index in reversed(range(len(sizes))):
        if current and held + sizes[index] > cap:
            buckets.append(current)
            current, held = [], 0
        current.append(index)
        held += sizes[index]
    if current:
        buckets.append(current)
    return buckets


class GradBuckets:
    """The bucketed reduce of one rank (collective over the world: every rank reduces the
    same buckets in the same order each step)."""

    def __init__(self, parameters: Sequence[nn.Parameter], bounds: Sequence[tuple[int, int]],
                 rank: int, world: int, bucket_bytes: int | None = None) -> None:
        """``bounds``: every rank's slice ``[lo, hi)`` of the flat vector, in rank order;
        ``bucket_bytes``: a bucket's size (None: ``BUCKET_BYTES``)."""
        self.parameters, self.bounds, self.rank = list(parameters), tuple(bounds), rank
        self.world = world
        first = self.parameters[0]
        self.offsets: list[int] = []
        offset = 0
        for p in self.parameters:
            self.offsets.append(offset)
            offset += p.numel()
        cap = max(1, (bucket_bytes or BUCKET_BYTES) // first.element_size())
        self.buckets = bucket_runs([p.numel() for p in self.parameters], cap)
        self.bucket_of = {i: b for b, run in enumerate(self.buckets) for i in run}
        lo, hi = self.bounds[rank]
        self.slice_grad = torch.zeros(hi - lo, dtype=first.dtype, device=first.device)
        """This rank's slice of the reduced gradient (the sum over the ranks)."""
        self.armed = False
        self._ready = [0] * len(self.buckets)
        self._seen = [False] * len(self.parameters)
        self._next = 0
        self._in_flight: collections.deque[list[tuple[Any, torch.Tensor | None, int]]] = (
            collections.deque())
        self._hooks = [p.register_post_accumulate_grad_hook(self._hook(i))
                       for i, p in enumerate(self.parameters)]

    def _hook(self, index: int) -> Any:
        def ready(_: torch.Tensor) -> None:
            if not self.armed:
                return  # not the last pass: the gradient keeps accumulating in .grad
            bucket = self.bucket_of[index]
            if bucket < self._next:
                raise RuntimeError(f"a second gradient of parameter {index} reached its bucket "
                                   "after the bucket was reduced (one backward per last pass)")
            if self._seen[index]:
                return  # accumulated again into .grad: the bucket counts each parameter once
            self._seen[index] = True
            self._ready[bucket] += 1
            while (self._next < len(self.buckets)
                   and self._ready[self._next] == len(self.buckets[self._next])):
                self._launch(self._next)
                self._next += 1
        return ready

    def arm(self) -> None:
        """The next backward is this rank's last pass of the step: reduce buckets as they
        fill."""
        self.armed = True

    def finish(self) -> torch.Tensor:
        """The rest of the step's buckets reduced in order (every bucket when no backward was
        armed: a benched rank's zeros, or gradients accumulated without ``arm``), every reduce
        waited for; returns this rank's slice of the summed gradient."""
        self.armed = False
        while self._next < len(self.buckets):
            self._launch(self._next)
            self._next += 1
        while self._in_flight:
            self._land(self._in_flight.popleft())
        self._ready = [0] * len(self.buckets)
        self._seen = [False] * len(self.parameters)
        self._next = 0
        return self.slice_grad

    def _launch(self, bucket: int) -> None:
        """Copy the bucket's gradients into one buffer (a missing one as zeros), free them,
        and start one reduce per owner of a piece of it."""
        run = self.buckets[bucket]
        lo = self.offsets[run[-1]]
        hi = self.offsets[run[0]] + self.parameters[run[0]].numel()
        buffer = self._buffer(run, hi - lo)
        works = []
        for owner, (own_lo, own_hi) in enumerate(self.bounds):
            a, b = max(lo, own_lo), min(hi, own_hi)
            if a < b:
                piece = buffer[a - lo:b - lo]
                work = _reduce(piece, owner) if self.world > 1 else None
                works.append((work, piece if owner == self.rank else None, a - own_lo))
        self._in_flight.append(works)
        if len(self._in_flight) > IN_FLIGHT:
            self._land(self._in_flight.popleft())

    def _buffer(self, run: list[int], size: int) -> torch.Tensor:
        """The bucket's gradients as one vector of ``size`` (a missing one as zeros), the
        parameters' ``.grad`` let go: a lone parameter's own gradient, reduced in place, else
        a copy of them."""
        lone = self.parameters[run[0]]
        if len(run) == 1 and lone.grad is not None and lone.grad.is_contiguous():
            buffer = lone.grad.view(-1)
            lone.grad = None  # freed once its reduce has landed
            return buffer
        first = self.parameters[0]
        buffer = torch.empty(size, dtype=first.dtype, device=first.device)
        at = 0
        for index in reversed(run):  # ascending: the flat vector's order
            p = self.parameters[index]
            piece = buffer[at:at + p.numel()]
            at += p.numel()
            if p.grad is None:
                piece.zero_()
            else:
                piece.copy_(p.grad.reshape(-1))
                p.grad = None  # the full gradient is freed: its owner's slice is all we keep
        return buffer

    def _land(self, works: list[tuple[Any, torch.Tensor | None, int]]) -> None:
        """Wait for one bucket's reduces; keep this rank's piece in its slice."""
        for work, piece, at in works:
            if work is not None:
                work.wait()
            if piece is not None:
                self.slice_grad[at:at + piece.numel()].copy_(piece)

    def remove(self) -> None:
        """Take the hooks off the parameters."""
        for handle in self._hooks:
            handle.remove()


def _reduce(tensor: torch.Tensor, owner: int) -> Any:
    """``dist.reduce`` of ``tensor`` to ``owner``, started (its work, to wait for); a CUDA
    tensor in a gloo world (a GPU rank beside CPU ranks) goes through host memory, reduced
    there and waited for at once (None), as gloo reduces CPU tensors only."""
    if tensor.device.type == "cpu" or dist.get_backend() == "nccl":
        return dist.reduce(tensor, dst=owner, async_op=True)
    staged = tensor.cpu()
    dist.reduce(staged, dst=owner)
    if dist.get_rank() == owner:
        tensor.copy_(staged)
    return None
