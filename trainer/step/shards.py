"""Sharded training state (``shard_state``): ZeRO stage 1 and 2 with each rank's slice sized by
its memory budget, not evenly.

The trained parameters are laid out as one flat fp32 vector (each parameter a view of it). The
vector is cut into contiguous slices, one per rank in rank order, each in proportion to that
rank's budget (``slice_bounds``): a rank owns its slice's optimizer state (AdamW's two moments,
SGD's momentum) and updates only it; the parameters stay replicated. Corral's parameters are
fp32 and autocast computes from them, so they are the master weights: there is no second copy
to shard.

A step under ``ShardedState``: every rank (a benched one too, with a zero gradient) takes part
in the gradient exchange over the world — ``optimizer`` (stage 1): the gradients accumulate in
one flat vector, all-reduced once, of which each rank keeps its slice; ``gradients`` (stage 2):
during the rank's last backward each bucket of gradients is reduced to the owners of its
elements (``dist.reduce`` per owner: uneven slices on gloo and NCCL alike) and freed, so the
rank keeps only its slice of the gradient (trainer/step/grad_buckets.py). Each rank then steps a
torch optimizer over its slice (a ``Parameter`` sharing the flat vector's storage: the same
elementwise arithmetic one process does on each parameter), and each owner broadcasts its
updated slice to every rank. Clipping and the fp16 scaler see the global gradient: its norm
from the slices with one all-reduce, the scaler's overflow flag all-reduced (torch's
``ShardedGradScaler``).

What it costs: the optimizer state per rank falls from the whole model's to its slice's, and at
stage 2 the gradient too (a rank with several passes a step still accumulates its whole
gradient until its last pass); the exchange is an all-reduce (stage 1) or per-owner reduces
(stage 2) plus per-owner broadcasts of the parameters, about one more model-sized transfer a
step than replication.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from profiles.user_errors import UsageError
from trainer.dist import all_gather_floats
from trainer.settings.train_config import TrainConfig
from trainer.step.grad_buckets import GradBuckets
from trainer.step.state_fit import GIB

Stage = Literal["optimizer", "gradients"]


def slice_bounds(total: int, budgets: Sequence[float]) -> tuple[tuple[int, int], ...]:
    """Contiguous slices ``[lo, hi)`` of ``total`` elements, one per rank in rank order, sized
    in proportion to ``budgets`` (any unit, each >= 0, at least one > 0); they cover
    ``0..total`` without gap or overlap. ValueError on a negative or all-zero budget."""
    if any(not b >= 0 for b in budgets) or not sum(budgets) > 0:
        raise ValueError(f"budgets must be >= 0 with one above 0, got {list(budgets)}")
    whole = float(sum(budgets))
    cuts, running = [0], 0.0
    for budget in budgets[:-1]:
        running += budget
        cuts.append(min(total, max(cuts[-1], int(total * running / whole))))
    cuts.append(total)
    return tuple(itertools.pairwise(cuts))


def host_available_bytes() -> float:
    """This host's memory available to a new allocation: ``MemAvailable`` of /proc/meminfo,
    less where this process's memory cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``)
    leaves less."""
    available = float("inf")
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            available = float(line.split()[1]) * 1024
    return min(available, _cgroup_room())


CGROUP_FILES = {"": ("", "memory.max", "memory.current"),  # v2: the unified hierarchy
                "memory": ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes")}
"""Per controller field of /proc/self/cgroup: the hierarchy's folder, its limit and usage."""


def _cgroup_room(root: Path = Path("/sys/fs/cgroup"),
                 own: Path = Path("/proc/self/cgroup")) -> float:
    """Bytes this process's memory cgroup (``own`` names it, under ``root``) still allows
    (inf: no limit, or none readable)."""
    try:
        entries = own.read_text().splitlines()
    except OSError:
        return float("inf")
    room = float("inf")
    for entry in entries:
        _, controllers, path = entry.split(":", 2)
        for controller in controllers.split(","):
            if controller in CGROUP_FILES:
                folder, limit_file, usage_file = CGROUP_FILES[controller]
                room = min(room, _room(root / folder / path.lstrip("/"), limit_file,
                                       usage_file))
    return room


def _room(folder: Path, limit_file: str, usage_file: str) -> float:
    try:
        limit = (folder / limit_file).read_text().strip()
        if limit == "max" or int(limit) >= 1 << 60:  # v1 writes a huge number for no limit
            return float("inf")
        return float(limit) - float((folder / usage_file).read_text())
    except (OSError, ValueError):
        return float("inf")


def measured_budget(device: torch.device) -> float:
    """This rank's budget for training state in bytes: a GPU's free memory
    (``torch.cuda.mem_get_info``); on a CPU, the host's available memory shared by the host's
    ranks (``LOCAL_WORLD_SIZE``)."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    ranks = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    return host_available_bytes() / ranks


class ShardedState:
    """The flat parameters and gradients, this rank's slice of them, and the per-step
    exchange (collective over the world: every rank calls the same methods in order)."""

    def __init__(self, parameters: Sequence[nn.Parameter], *, rank: int, world: int,
                 budgets: Sequence[float], stage: Stage) -> None:
        """``budgets``: every rank's, in rank order (bytes or any one unit). UsageError when the
        trained parameters are not of one floating dtype on one device."""
        kinds = {(p.dtype, p.device) for p in parameters}
        if len(kinds) != 1 or not next(iter(kinds))[0].is_floating_point:
            raise UsageError("shard_state needs the trained parameters in one floating dtype "
                             f"on one device; they are {sorted(str(k) for k in kinds)}")
        self.parameters, self.rank, self.world, self.stage = list(parameters), rank, world, stage
        first = self.parameters[0]
        self.flat = torch.empty(sum(p.numel() for p in self.parameters), dtype=first.dtype,
                                device=first.device)
        for p, view in zip(self.parameters, _views(self.flat, self.parameters), strict=True):
            view.copy_(p.detach())
            p.data = view  # the parameter now lives in the flat vector; its old copy is freed
        self.buckets: GradBuckets | None = None
        self.own_budget = float(budgets[rank])
        """This process's budget, kept when a change of membership moves it to another rank."""
        self.reslice(rank, world, budgets)

    def reslice(self, rank: int, world: int, budgets: Sequence[float]) -> None:
        """This rank's slice (``rank`` of ``world``) cut anew by ``budgets`` (every rank's, in
        rank order): a change of membership. The parameters stay; the caller makes the
        optimizer over the new ``master`` and loads its state (trainer/step/slice_moves.py)."""
        if self.buckets is not None:
            self.buckets.remove()  # the old cut's hooks off the parameters
        self.rank, self.world = rank, world
        self.bounds = slice_bounds(self.flat.numel(), budgets)
        self.budgets = tuple(budgets)
        lo, hi = self.bounds[rank]
        self.master = nn.Parameter(self.flat[lo:hi])
        """This rank's slice of the parameters, as the one parameter its optimizer steps (it
        shares the flat vector's storage: an update is the parameters' update)."""
        self.buckets = (GradBuckets(self.parameters, self.bounds, rank, world)
                        if self.stage == "gradients" else None)
        """Stage 2: the gradients reduced bucket by bucket during the backward and freed
        (trainer/step/grad_buckets.py); stage 1 keeps the flat gradient whole."""
        self.grad = torch.zeros_like(self.flat) if self.buckets is None else self.flat[:0]
        self.attach_grads()

    @property
    def owned(self) -> int:
        """Elements of the slice this rank owns."""
        lo, hi = self.bounds[self.rank]
        return hi - lo

    def attach_grads(self) -> None:
        """Stage 1: every parameter's ``.grad`` a view of the flat gradient (zeroed), so the
        backward accumulates into it in place; the slice's gradient likewise. Stage 2: no
        ``.grad`` (the backward makes each and the buckets free it)."""
        if self.buckets is not None:
            for p in self.parameters:
                p.grad = None
            self.master.grad = self.buckets.slice_grad
            return
        for p, view in zip(self.parameters, _views(self.grad, self.parameters), strict=True):
            p.grad = view
        lo, hi = self.bounds[self.rank]
        self.master.grad = self.grad[lo:hi]

    def arm(self) -> None:
        """Call before this rank's last backward of the step: stage 2 reduces each bucket as
        that backward fills it and frees its gradients (without it, ``reduce_gradients`` does
        the same arithmetic after the backward, holding every gradient until then)."""
        if self.buckets is not None:
            self.buckets.arm()

    def reduce_gradients(self) -> None:
        """The step's gradient exchange: this rank's slice of the flat gradient becomes the sum
        over every rank divided by the world size (as DDP's mean; the division by the global
        unit count undoes it), other elements are left unspecified."""
        if self.buckets is not None:
            self.master.grad = self.buckets.finish()
            self.master.grad.div_(self.world)
            return
        for p, view in zip(self.parameters, _views(self.grad, self.parameters), strict=True):
            if p.grad is not None and p.grad.data_ptr() != view.data_ptr():
                view.copy_(p.grad)  # something replaced the view: take its values
            elif p.grad is None:
                view.zero_()
        if self.world > 1:
            dist.all_reduce(self.grad)
        lo, hi = self.bounds[self.rank]
        self.master.grad = self.grad[lo:hi]
        self.master.grad.div_(self.world)

    def global_norm(self) -> torch.Tensor:
        """The 2-norm of the whole reduced gradient, from every rank's slice with one
        all-reduce (0-d, the gradient's dtype, on its device)."""
        grad = self.master.grad
        assert grad is not None
        squares = grad.to(torch.float64).square().sum()
        if self.world > 1:
            dist.all_reduce(squares)
        return squares.sqrt().to(grad.dtype)

    def gather(self) -> None:
        """Every owner's updated slice on every rank (one broadcast per owner), then the
        gradient zeroed for the next step."""
        if self.world > 1:
            for owner, (lo, hi) in enumerate(self.bounds):
                if hi > lo:
                    dist.broadcast(self.flat[lo:hi], src=owner)
        if self.buckets is None:
            self.grad.zero_()
        self.attach_grads()


def _views(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
    offset = 0
    for t in like:
        yield flat[offset:offset + t.numel()].view_as(t)
        offset += t.numel()


def make_shards(config: TrainConfig, parameters: Sequence[nn.Parameter], *, rank: int,
                world: int, device: torch.device, joining: bool = False) -> ShardedState | None:
    """The sharded state ``config.shard_state`` asks for (None: ``replicate``), sliced by every
    rank's budget: ``state_budget`` when given, else measured here; gathered (collective over
    the world). A joiner (``joining``) gathers nothing here, the run being mid-step: it holds
    the whole vector until the generation that admits it re-slices (``SliceMoves``)."""
    if config.shard_state == "replicate":
        return None
    own = own_budget(config, rank, device)
    if joining:
        return ShardedState(parameters, rank=0, world=1, budgets=[own],
                            stage=config.shard_state)
    budgets = [row[0] for row in all_gather_floats([own], device)] if world > 1 else [own]
    return ShardedState(parameters, rank=rank, world=world, budgets=budgets,
                        stage=config.shard_state)


def own_budget(config: TrainConfig, rank: int, device: torch.device) -> float:
    """This rank's budget for training state in bytes: ``state_budget`` when given (one for
    this command's ranks, a host's, or one per rank), else measured (``measured_budget``)."""
    given = config.state_budget
    if given is None:
        return measured_budget(device)
    return (given[0] if len(given) == 1 else given[rank]) * GIB

