"""What the exact loop (trainer/exact_loop.py) holds per membership generation, each as one
value replaced whole when the group changes: this rank's place (``RankPlace``: its rank, the
world, its per-rank settings) and what is built on the group (``GroupParts``: the DDP module,
the tally, the clock, the active set, the balancer, the runner, the evaluator, the
checkpointer). Without live membership both are made once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from trainer.balance.balancer import Balancer
from trainer.balance.config import rank0_config
from trainer.checkpoint.checkpointer import Checkpointer
from trainer.compat import wrap_ddp
from trainer.dist import on_any_rank
from trainer.evaluate import Evaluator, held_out
from trainer.event_log import EventWriter
from trainer.membership.plan import NextGeneration, config_for, remap_ranks
from trainer.settings.train_config import TrainConfig
from trainer.settings.training_checks import micro_batches
from trainer.step.accumulate import ShareRunner
from trainer.step.batch_order import GlobalBatchOrder
from trainer.step.capacity import Capacity
from trainer.step.clock import StepClock, make_clock
from trainer.step.exchange import ActiveSteps
from trainer.step.flat_collectives import BufferSync, broadcast_buffers
from trainer.step.optim import OptimizerStep
from trainer.step.slowdown import SlowdownSchedule, emulates
from trainer.step.step_records import RunProgress
from trainer.step.tally import TallyExchange
from trainer.tasks import Task


@dataclass(frozen=True)
class RankPlace:
    """This rank's place in its generation and every setting that depends on it."""

    rank: int
    world: int
    config: TrainConfig
    """The run's settings, per-rank ones numbered for this generation."""
    micro_batch: tuple[int | None, ...]
    """Each rank's largest pass (None: its whole share in one)."""
    max_batch: tuple[int | None, ...]
    """Each rank's share cap (None: none)."""
    slowdown: SlowdownSchedule
    """This rank's emulated slowdown."""
    state_from: int | None = None
    """The rank whose training state every other one takes once the parts are made
    (``NextGeneration.state_from``; None: none, as at the launch)."""

    def moved(self, plan: NextGeneration, rank: int) -> RankPlace:
        """The place of rank ``rank`` in ``plan``'s generation (a kept rank's settings follow
        it; a joiner's are fresh; a change of generation ends ``--slowdown-at``'s schedule)."""
        config = config_for(self.config, plan.kept, plan.split)
        return RankPlace(rank=rank, world=len(plan.generation.members), config=config,
                         micro_batch=remap_ranks(self.micro_batch, plan.kept, None),
                         max_batch=remap_ranks(self.max_batch, plan.kept, None),
                         slowdown=SlowdownSchedule(config.slowdown_for(rank), (), rank),
                         state_from=plan.state_from)


@dataclass(frozen=True)
class GroupParts:
    """What depends on the group and this rank's place in it."""

    ddp: Any
    """The model under DDP (its mean over ranks made exact by divide_by_global_units)."""
    buffer_sync: BufferSync
    """The buffers' sync, after a step that changed one (not at every forward)."""
    tallies: TallyExchange
    """The step's tally: one device tensor, gathered once per step (trainer/step/tally.py)."""
    clock: StepClock
    active: ActiveSteps
    """Who takes part in the gradient exchange (trainer/step/exchange.py)."""
    balancer: Balancer | None
    """Rank 0's balancer; None elsewhere."""
    runner: ShareRunner
    evaluator: Evaluator | None
    checkpointer: Checkpointer


@dataclass(frozen=True)
class LoopParts:
    """What the exact loop keeps from one generation to the next (the inputs of its parts)."""

    task: Task
    order: GlobalBatchOrder
    model: torch.nn.Module
    parameters: list[torch.nn.Parameter]
    optim_step: OptimizerStep
    device: torch.device
    events: EventWriter
    run: RunProgress
    stop_requested: Callable[[], bool]
    prefetched: Callable[[int, Sequence[int]], Any] | None
    """The batch read ahead for a step and split, if batches are read ahead."""


def build_parts(loop: LoopParts, place: RankPlace, balancer_state: dict[str, Any] | None,
                flags: Callable[[], tuple[float, float]] | None,
                make_group: Callable[[list[int], str], object] | None) -> GroupParts:
    """Every part made on the group now (collective): DDP, the tally, the clock, the active
    set, the balancer (``balancer_state`` loaded), the runner, the evaluator, the checkpointer.
    ``flags``/``make_group``: live membership's (``Generations``), None without it."""
    config, device, rank, world = place.config, loop.device, place.rank, place.world
    shards = loop.optim_step.shards
    # Sharded state runs its own exchange (trainer/step/shards.py): DDP's buckets, a second
    # copy of every gradient, would cost the memory sharding saves.
    with _own_state_kept(loop.model, keep=place.state_from not in (None, 0)):
        ddp: Any = wrap_ddp(loop.model, device) if shards is None else _same_start(loop.model)
    buffer_sync = BufferSync(loop.model, device)
    # A CPU rank's clock hook starts the tally inside the last backward (EarlyTally).
    tallies = TallyExchange(device, world, stop_requested=loop.stop_requested,
                            buffers_changed=buffer_sync.changed, membership=flags)
    clock = make_clock(device, emulated_run=on_any_rank(
        emulates(config.slowdown, config.slowdown_at), device))
    if shards is None:
        ddp.register_comm_hook(None, clock.hook)  # times the local backward
    active = ActiveSteps(
        config, rank=rank, world=world, device=device, task=loop.task,
        parameters=loop.parameters, optim_step=loop.optim_step,
        micro_batch=place.micro_batch[rank],
        slowdown=lambda: place.slowdown.factor_at(loop.run.step), make_group=make_group,
    ).start(loop.run.split)
    balancer = _balancer(place, active, loop.run.split, balancer_state)
    runner = ShareRunner(ddp=ddp, model=loop.model, task=loop.task, order=loop.order,
                         parameters=loop.parameters, rank=rank, world=world, device=device,
                         precision=config.precision, clock=clock, tallies=tallies,
                         scale_loss=loop.optim_step.scale_loss, prefetched=loop.prefetched,
                         active=active.set, shards=shards)
    evaluator = Evaluator(
        task=loop.task, data=held_out(loop.task, config.eval_samples, config.task),
        every=config.eval_every, model=ddp, rank=rank, device=device,
        precision=config.precision, micro_batch=place.micro_batch, events=loop.events,
    ) if config.eval_every else None
    checkpointer = Checkpointer(
        config, rank=rank, world=world, events=loop.events, model=loop.model,
        optimizer=loop.optim_step.saved, balancer=balancer,
        training=loop.optim_step.state_dict)
    return GroupParts(ddp=ddp, buffer_sync=buffer_sync, tallies=tallies, clock=clock,
                      active=active, balancer=balancer, runner=runner, evaluator=evaluator,
                      checkpointer=checkpointer)


class Unshared(torch.nn.Module):
    """DDP's face without DDP (sharded state): called as the model, the model on
    ``.module`` (a task's loss may read it there: trainer/tasks/__init__.py)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)


@contextmanager
def _own_state_kept(model: torch.nn.Module, *, keep: bool) -> Iterator[None]:
    """With ``keep``, this rank's own parameters and buffers as they were before the block,
    whatever it copied into them. DDP's wrapping gives every rank rank 0's; when the new
    generation takes its training state from another rank (after a loss that rank 0 saw a
    step earlier than a survivor that completed that step), the state sent must be that
    rank's own, not rank 0's parameters labelled with its step (one step lost: the chaos
    run's seed 82, ``bench/chaos.py``). Every rank keeps its own, so a forming retried after
    this one failed starts from each rank's own state again."""
    tensors = [*model.parameters(), *model.buffers()] if keep else []
    own = [tensor.detach().clone() for tensor in tensors]
    try:
        yield
    finally:  # a wrapping cut by a member lost midway leaves some of rank 0's copied too
        with torch.no_grad():
            for tensor, kept in zip(tensors, own, strict=True):
                tensor.copy_(kept)


def _same_start(model: torch.nn.Module) -> Unshared:
    """``model`` with rank 0's parameters and buffers on every rank, as DDP's wrapping leaves
    it (collective over the world), in DDP's face."""
    if dist.get_world_size() > 1:
        broadcast_buffers([*model.parameters(), *model.buffers()], src=0)
    return Unshared(model)


def _balancer(place: RankPlace, active: ActiveSteps, split: Sequence[int],
              saved: dict[str, Any] | None) -> Balancer | None:
    """Rank 0's balancer. Memory caps learnt from stored profiles bind every later split."""
    if place.rank != 0:
        return None
    links = active.set.link_mbit
    balancer = Balancer(rank0_config(place.config, place.world, place.max_batch,
                                     place.micro_batch, links if any(links) else None),
                        tuple(split))
    if saved is not None:
        balancer.load_state_dict(saved)
    return balancer


def joiner_capacity(config: TrainConfig, world: int, split: tuple[int, ...]) -> Capacity:
    """A joiner's first split: its generation's (every rank's micro-batch as its own flags
    say; only rank 0's balancer reads the others', and rank 0 keeps its own)."""
    return Capacity(split=split, source="split", samples_per_s=(None,) * world,
                    max_batch=(None,) * world, micro_batch=micro_batches(config, world),
                    detail="the split of the generation that admitted this joiner")
