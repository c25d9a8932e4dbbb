"""The active set: only ranks with a share take part in a step's gradient exchange.

A rank whose share is 0 is *benched*: it runs no pass, and the gradient all-reduce of the step
runs over a process group of the active ranks only (made with ``dist.new_group`` when the set
first occurs, then cached, at most ``MAX_GROUPS``: the set changes rarely; NCCL when every member
computes on CUDA, else the world's backend). A set of one rank exchanges nothing: its
gradient is the sum, divided by the world size locally, and no buffer is broadcast. Buffers
changed by a step are broadcast over the active set only; benched ranks take them with the
replica when they rejoin. The tally all-gather stays world-wide (a few floats), so every rank
still learns the step's global unit count and stop requests.

Why the explicit all-reduce over the active group rather than a DDP per active set: DDP's
reducer is bound to one process group, and a DDP built per set broadcasts the whole model and
checks every parameter's shape over the group when it is made; the explicit all-reduce (the
path a step with a 0 in its split already took) needs neither. While every rank is active, the
world's DDP keeps its overlap of the all-reduce with the backward.

A benched rank keeps an exact replica, lazily: it skips the optimizer step, and when it is
needed again — it rejoins, or it must write a checkpoint or the final result — every rank
takes part in one world broadcast from the lowest active rank of the parameters, buffers,
optimizer state and the training state (the fp16 loss scale). So any active set gives the same
parameters as one process with the whole batch, and a checkpoint holds what a resume needs.

A benched rank is re-probed off the critical path: now and then (after 1, 2, 4, then every 4
windows of ``rebalance_every`` steps) it times one forward+backward of the probe batch
(``trainer.balance.cost.probe_batch``) in a background thread, with its emulated slowdown,
while the active ranks compute. ``torch.autograd.grad`` returns the gradients without touching
``.grad``, so the replica's state is untouched. Its next tally reports the seconds as its
compute time; rank 0's balancer reads them as a measurement at the probe batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from trainer.balance.cost import probe_batch
from trainer.dist import all_gather_floats, print0
from trainer.settings.train_config import TrainConfig
from trainer.step.amp import autocast
from trainer.step.batches import collated
from trainer.step.flat_collectives import ALONE, BufferSync, broadcast_buffers
from trainer.step.optim import OptimizerStep, StepOutcome
from trainer.step.slowdown import WorkTimer, emulate_slowdown
from trainer.tasks import Task

PROBE_MAX_WINDOWS = 4
"""Longest gap between two probes of a benched rank, in balancer windows."""


def active_ranks(split: Sequence[int]) -> tuple[int, ...]:
    """The ranks with a share: the ones that take part in the gradient exchange."""
    return tuple(r for r, b in enumerate(split) if b > 0)


MakeGroup = Callable[[list[int], str], Any]
"""Makes the process group of some ranks with a backend (collective over the world)."""
MAX_GROUPS = 4
"""Process groups of active sets kept at once; the least recently used one beyond is destroyed
(an NCCL communicator holds device memory)."""


def group_backend(members: Sequence[int], cuda_ranks: Sequence[bool], world_backend: str) -> str:
    """The backend of an active set's group: NCCL when every member computes on a CUDA device
    (GPU to GPU, even in a gloo world), else the world's (gloo where CPU ranks are active
    beside GPU ranks: a two-level exchange is a later step, docs/balancing.md)."""
    if all(cuda_ranks[r] for r in members) and dist.is_nccl_available():
        return "nccl"
    return world_backend


class ActiveSet:
    """The process groups of the active sets met so far, and the replica of a benched rank."""

    def __init__(self, *, rank: int, world: int, device: torch.device,
                 link_mbit: float | None = None, make_group: MakeGroup | None = None) -> None:
        """``link_mbit``: this rank's host link as the pre-flight check measured it;
        ``make_group(ranks, backend)``: how a group is made (``dist.new_group``; with live
        membership, bounded when a member is lost meanwhile: trainer/membership/store.py)."""
        self.rank, self.world, self.device = rank, world, device
        self._make_group = make_group or (lambda ranks, backend: dist.new_group(
            ranks, backend=backend))
        self._groups: dict[tuple[int, ...], Any] = {}  # oldest use first
        self._probe: Probe | None = None
        # Which ranks compute on CUDA, and every rank's link (one small gather at start; every
        # rank makes the set).
        rows = all_gather_floats([1.0 if device.type == "cuda" else 0.0, link_mbit or 0.0],
                                 device) if world > 1 else [[0.0, link_mbit or 0.0]]
        self.cuda_ranks = tuple(row[0] > 0 for row in rows)
        self.link_mbit = tuple(row[1] for row in rows)
        """Each rank's link in Mbit/s (0: not known), for the balancer's exchange model."""
        self.made_s: dict[tuple[int, ...], float] = {}
        """Seconds each group took to make (printed by rank 0 as it is made)."""

    def prepare(self, split: Sequence[int]) -> None:
        """Make the active set's group (collective over the world: every rank calls it with the
        same split, at the same point, so the groups are made and destroyed in the same order
        everywhere). A set of one rank needs none: it exchanges nothing."""
        active = active_ranks(split)
        if len(active) in (1, self.world):
            return
        if active in self._groups:
            self._groups[active] = self._groups.pop(active)  # the newest use
            return
        if len(self._groups) >= MAX_GROUPS:
            oldest = next(iter(self._groups))
            group = self._groups.pop(oldest)
            if self.rank in oldest:
                dist.destroy_process_group(group)
        backend = group_backend(active, self.cuda_ranks, str(dist.get_backend()))
        started = time.perf_counter()
        self._groups[active] = self._make_group(list(active), backend)
        self.made_s[active] = time.perf_counter() - started
        print0(f"corral trainer: process group of ranks {','.join(map(str, active))} "
               f"({backend}) made in {self.made_s[active] * 1000:.0f} ms", rank=self.rank)

    def group(self, split: Sequence[int]) -> Any:
        """The process group of ``split``'s active ranks (None: the world's; a set of one rank
        has none and exchanges nothing)."""
        active = active_ranks(split)
        if len(active) == 1 and self.world > 1:
            return ALONE
        return None if len(active) == self.world else self._groups[active]

    def benched(self, split: Sequence[int]) -> bool:
        """Whether this rank sits out of steps under ``split``."""
        return split[self.rank] == 0

    def probe(self) -> Probe | None:
        """This rank's probe (None unless it is benched under the dynamic policy)."""
        return self._probe

    def switch(self, old: Sequence[int], new: Sequence[int], replica: Replica,
               probe: Callable[[], Probe | None]) -> None:
        """Move from ``old`` to ``new`` at a step boundary (every rank, same arguments): a rank
        that rejoins first receives the exact state; then the new set's group is made."""
        rejoining = [r for r in range(self.world) if old[r] == 0 and new[r] > 0]
        if rejoining:
            self._stop_probe()
            replica.copy_from(active_ranks(old)[0])
        self.prepare(new)
        if self.benched(new) and self._probe is None:
            self._probe = probe()
        elif not self.benched(new):
            self._stop_probe()

    def exact_now(self, split: Sequence[int], replica: Replica) -> None:
        """Bring benched ranks' replicas up to date (every rank, same split) when rank 0 is
        benched: before it writes a checkpoint or the final result."""
        if split[0] > 0:  # rank 0 writes them, and its replica is exact
            return
        self._stop_probe(keep=True)
        replica.copy_from(active_ranks(split)[0])

    def _stop_probe(self, keep: bool = False) -> None:
        if self._probe is not None:
            self._probe.join()
            if not keep:
                self._probe = None


class Replica:
    """What makes a benched rank's copy exact: parameters, buffers, optimizer, training state."""

    def __init__(self, model: nn.Module, parameters: list[nn.Parameter],
                 optimizer: torch.optim.Optimizer,
                 training_state: Callable[[], dict[str, Any]],
                 load_training_state: Callable[[dict[str, Any] | None], None],
                 sharded: bool = False) -> None:
        self.model, self.parameters, self.optimizer = model, parameters, optimizer
        self.sharded = sharded
        self.training_state, self.load_training_state = training_state, load_training_state

    def copy_from(self, source: int) -> None:
        """Rank ``source``'s state on every rank (collective over the world). Under
        ``shard_state`` every rank steps its slice every step, benched or not, and the
        parameters are gathered everywhere: only the buffers can be behind."""
        if self.sharded:
            broadcast_buffers(list(self.model.buffers()), src=source)
            return
        # The trained parameters only: frozen ones (a LoRA's base model) never change.
        broadcast_buffers([*self.parameters, *self.model.buffers()], src=source)
        # The optimizer state's layout differs on a rank that never stepped (lazy state), so it
        # travels as an object; on the CPU, which every rank can unpickle.
        payload: list[Any] = [None]
        if dist.get_rank() == source:
            payload = [(_to_cpu(self.optimizer.state_dict()), self.training_state())]
        dist.broadcast_object_list(payload, src=source)
        if dist.get_rank() != source:
            optimizer_state, training = payload[0]
            self.optimizer.load_state_dict(optimizer_state)
            self.load_training_state(training)
        self.optimizer.zero_grad(set_to_none=True)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


class Probe:
    """A benched rank's background timing of one pass (see the module)."""

    def __init__(self, measure: Callable[[], float], rebalance_every: int) -> None:
        self._measure, self._every = measure, rebalance_every
        self._thread: threading.Thread | None = None
        self._result: float | None = None
        self._done = 0
        self._steps = 0

    def tick(self) -> None:
        """One benched step passed: start a probe when one is due and none is running."""
        self._steps += 1
        gap = min(2 ** self._done, PROBE_MAX_WINDOWS) * self._every
        if self._steps < gap or (self._thread is not None and self._thread.is_alive()):
            return
        self._steps = 0
        self._thread = threading.Thread(target=self._run, name="corral-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._measure()
        except Exception:  # a failed probe only means no measurement; the run goes on
            self._result = None
        self._done += 1

    def take(self) -> float:
        """The newest probe's seconds, once (0.0: no new measurement)."""
        result, self._result = self._result, None
        return result or 0.0

    def join(self) -> None:
        """Wait for a running probe (before the replica is overwritten)."""
        if self._thread is not None:
            self._thread.join()


def time_one_pass(model: nn.Module, batch: Any, loss: Callable[[nn.Module, Any], Any],
                  parameters: list[nn.Parameter], device: torch.device, factor: float,
                  precision: str) -> float:
    """Seconds of one forward+backward of ``batch`` (emulated slowdown ``factor`` included),
    gradients returned and dropped rather than accumulated."""
    timer = WorkTimer()
    timer.start()
    with autocast(precision, device):
        loss_sum, _ = loss(model, batch)
    torch.autograd.grad(loss_sum, parameters, allow_unused=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, own = timer.read()
    return emulate_slowdown(factor, own, wall)


class ActiveSteps:
    """The trainer's side of the active set: its groups, the replica, the probe, and the
    optimizer step a benched rank skips."""

    def __init__(self, config: TrainConfig, *, rank: int, world: int, device: torch.device,
                 task: Task, parameters: list[nn.Parameter], optim_step: OptimizerStep,
                 micro_batch: int | None, slowdown: Callable[[], float],
                 make_group: MakeGroup | None = None) -> None:
        """``slowdown()``: this rank's emulated slowdown factor now (for its probes);
        ``make_group``: ``ActiveSet``'s."""
        self.set = ActiveSet(rank=rank, world=world, device=device, link_mbit=config.link_mbit,
                             make_group=make_group)
        self.replica = Replica(task.model, parameters, optim_step.optimizer,
                               optim_step.state_dict, optim_step.load_state_dict,
                               sharded=optim_step.shards is not None)
        self.optim_step = optim_step
        self._every = config.rebalance_every
        # Probes only serve the dynamic policy: no other one changes a split.
        self._probe_pass = probe_pass(
            task=task, parameters=parameters, device=device, precision=config.precision,
            batch_size=probe_batch(config.global_batch, world, micro_batch), factor=slowdown,
        ) if config.policy == "dynamic" else None

    def _new_probe(self) -> Probe | None:
        return None if self._probe_pass is None else Probe(self._probe_pass, self._every)

    def start(self, split: Sequence[int]) -> ActiveSteps:
        """The first split's group and probe (every rank); returns itself."""
        self.set.switch(split, split, self.replica, self._new_probe)
        return self

    def switch(self, old: Sequence[int], new: Sequence[int]) -> None:
        """A new split from the next step on (every rank, after the balancer's broadcast)."""
        self.set.switch(old, new, self.replica, self._new_probe)

    def source(self, split: Sequence[int]) -> int:
        """The rank whose buffers and state the others take: the lowest active one."""
        return active_ranks(split)[0]

    def sync_buffers(self, split: Sequence[int], buffer_sync: BufferSync) -> None:
        """After a step that changed a buffer: the lowest active rank's buffers on every active
        rank (collective over the active set; a benched rank takes them when it rejoins, with
        the replica, and a set of one rank sends nothing)."""
        if not self.set.benched(split):
            buffer_sync.sync(self.source(split), self.set.group(split))

    def optimizer_step(self, step: int, split: Sequence[int],
                       global_units: float | torch.Tensor) -> StepOutcome:
        """The optimizer step; a benched rank skips it (its replica is brought up to date when
        it is needed) and reports the step's learning rate, unless the state is sharded: then
        it steps its slice as every rank does."""
        if self.set.benched(split) and self.optim_step.shards is None:
            return StepOutcome(lr=self.optim_step.schedule.lr_at(step), norm=None, scaled=None)
        return self.optim_step.step(step, global_units)

    def exact_now(self, split: Sequence[int], due: bool = True) -> None:
        """When ``due`` (rank 0 is about to write a checkpoint or the result), rank 0's replica
        exact (collective; nothing to do while rank 0 is active)."""
        if due:
            self.set.exact_now(split, self.replica)


def probe_pass(*, task: Task, parameters: list[nn.Parameter], device: torch.device,
               precision: str, batch_size: int,
               factor: Callable[[], float]) -> Callable[[], float]:
    """A benched rank's probe: one timed pass of ``batch_size`` training items (made on the
    first probe: most ranks are never benched)."""
    made: list[Any] = []

    def measure() -> float:
        if not made:
            made.append(collated(task, range(min(batch_size, len(task.train_data))), device))
        return time_one_pass(task.model, made[0], task.loss, parameters, device, factor(),
                             precision)

    return measure
