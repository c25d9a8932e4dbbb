"""The exact loop: one rank's steps 3 to 6 of trainer/train.py, every step exact.

(3) model and optimizer, identical on every rank, maybe resumed; (4) the first split: given,
equal, or from capacities; (5) train: each step runs this rank's share, gathers every rank's
tally, steps the optimizer, then reports, evaluates, rebalances and checkpoints when due;
(6) the final checkpoint and result. Any split of the global batch gives the same parameters
as one process (trainer/step/tally.py says how).

The step's timings, one hand-off: ``ShareRunner.run`` returns what it measured (loss and units
as device tensors, its exchange seconds, the tally gather a CPU rank's clock started); the
clock answers ``tally_time`` (what the tally carries) and ``times`` (this step's compute time,
read after the tally read); the step before's numbers live in ``RunProgress.last_timed``; and
``train_step`` hands everything the report and the balancer use over as one ``StepDone``.
"""

from __future__ import annotations

import gc
import socket
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
import torch.distributed as dist

from profiles.user_errors import UsageError
from trainer.balance.balancer import Balancer
from trainer.balance.fit import RankTimes
from trainer.balance.passes import passes
from trainer.checkpoint.checkpointer import restore, resume, write_final
from trainer.compat import set_tf32, tf32_enabled
from trainer.dist import RankInfo, broadcast_ints, device_name, print0
from trainer.event_log import EventWriter
from trainer.events import CapacityEvent, SamplesEvent
from trainer.exact_parts import GroupParts, LoopParts, RankPlace, build_parts, joiner_capacity
from trainer.membership.generations import generations_for
from trainer.membership.members import Membership
from trainer.membership.plan import NextGeneration, balancer_state_for
from trainer.placement import Placement, placement_fields
from trainer.resources import ResourceReporter
from trainer.settings.syncbatch import check_syncbatch_passes
from trainer.settings.train_config import TrainConfig
from trainer.step.batch_order import GlobalBatchOrder, share_seconds
from trainer.step.batches import collated
from trainer.step.optim import optimizer_step, state_fields
from trainer.step.prefetch import BatchPrefetcher, prefetch_wanted
from trainer.step.slice_moves import slice_moves
from trainer.step.slowdown import SlowdownSchedule
from trainer.step.solo import solo_fields, split_and_solo
from trainer.step.step_records import RunProgress, StepDone, TimedStep
from trainer.step.tally import ComputeTime, timed_steps
from trainer.step_report import (
    LossTally,
    OptimizerFacts,
    global_loss_of,
    report_rebalance,
    report_start,
    report_step,
)
from trainer.stopping import StopSignals, check_finite_loss
from trainer.tasks import Task, trainable_parameters
from trainer.tasks.loader import task_label


class Trainer:
    """The exact loop: steps 3 to 6 for one rank, after it joined the process group. With live
    membership its generations are driven by ``Generations`` (trainer/membership/), which calls
    back ``take_place``, ``reform``, ``training_state`` and ``load_training_state``; without
    it by ``FixedGroup``."""

    def __init__(self, config: TrainConfig, info: RankInfo, device: torch.device, backend: str,
                 task: Task, order: GlobalBatchOrder, events: EventWriter, stop: StopSignals,
                 run: RunProgress, placement: Placement | None = None,
                 membership: Membership | None = None) -> None:
        self.task, self.order, self.run, self.placement = task, order, run, placement
        self.group = generations_for(membership, self, events, run, backend=backend,
                                     device=device, global_batch=config.global_batch,
                                     abort_on_loss=True)
        # A membership change moves this rank (``take_place`` sets the prefetcher's rank): a
        # batch read ahead for the old place is stale and made again.
        self.prefetcher = (BatchPrefetcher(task, order, info.rank, device)
                           if prefetch_wanted(config.prefetch, device) else None)
        rank, world, self.device = info.rank, info.world_size, device
        self.events, self.stop = events, stop
        slowdown = SlowdownSchedule(config.slowdown_for(rank), config.slowdown_at, rank)
        self.host, self.device_name = socket.gethostname(), device_name(device)

        # -- 3. Model and optimizer, identical on every rank; maybe resume -------------------
        set_tf32(config.precision == "tf32")  # torch's default lets cuDNN use TF32 even in fp32
        # Training mode: from_pretrained returns eval mode, which turns off checkpointing,
        # dropout and bitsandbytes' training path.
        self.model = task.model.to(device).train()
        self.parameters = trainable_parameters(task)
        if not self.parameters:
            raise UsageError(f"the {config.task} task has no parameter to train")
        self.optim_step = optimizer_step(config, self.parameters, rank=rank, world=world,
                                         device=device, total_steps=run.total_steps,
                                         joining=self.group.joining is not None)
        self.optimizer = self.optim_step.saved  # sharded: the slices seen whole
        self.moves = slice_moves(config, self.optim_step, device, self.group)
        resumed_split, balancer_state, resumed_from = restore(
            resume(config, rank=rank, device=device), model=self.model,
            optimizer=self.optimizer, load_training=self.optim_step.load_state_dict, run=run,
            world=world, policy=config.policy)

        # -- 4. The first split: given, equal, or from capacities (profiles or a warm-up) ----
        # A joiner takes its admitting generation's split (no collective: the others train).
        joining = self.group.joining
        first_split = joiner_capacity(config, world, joining.split) if (
            joining is not None) else split_and_solo(
            config, world_size=world, rank=rank, model=self.model, loss=task.loss,
            batch_of=lambda n: collated(task, range(min(n, len(task.train_data))), device),
            device=device, slowdown=slowdown.factor_at(run.step + 1), host=self.host,
            device_name=self.device_name, resumed_split=resumed_split)
        run.split = first_split.split
        self.place = RankPlace(rank=rank, world=world, config=config,
                               micro_batch=first_split.micro_batch,
                               max_batch=first_split.max_batch, slowdown=slowdown)
        check_syncbatch_passes(config.resolved_norm, self.place.micro_batch, run.split)
        self._announce(backend, first_split, resumed_from)
        if self.group.live:  # each forming collects only what came after (``take_place``)
            gc.freeze()
            self.group.keep_written(config.policy, run.split)  # a host back: its share
        self._carried_balancer: dict[str, Any] | None = balancer_state
        """The balancer's state for the next parts made, in their numbering (rank 0; kept
        while a generation forms, and when the forming fails and is retried)."""
        self.parts: GroupParts | None = None
        self.reform()
        self.group.admitted()  # a joiner: the state

    # -- this rank's place, one value (``RankPlace``) ---------------------------------------
    @property
    def config(self) -> TrainConfig:
        return self.place.config

    @property
    def rank(self) -> int:
        return self.place.rank

    @property
    def world(self) -> int:
        return self.place.world

    @property
    def split(self) -> tuple[int, ...]:
        """Each rank's share of the global batch now."""
        return self.run.split

    @property
    def built(self) -> GroupParts:
        """What this generation built on its group (made whole by ``reform``)."""
        assert self.parts is not None, "the group's parts are made in __init__ and reform"
        return self.parts

    # -- what the generations driver calls (trainer/membership/generations.py) -------------
    def take_place(self, plan: NextGeneration, rank: int) -> None:
        """This rank's place (``rank``) in ``plan``'s generation, before its group forms: the old
        group's parts let go (DDP's hooks on the parameters with them), the gradients of an
        interrupted step dropped, the balancer's state renumbered (rank 0 keeps rank 0's
        place: the master's host cannot leave)."""
        run, balancer = self.run, self.parts.balancer if self.parts is not None else None
        carried = self._carried_balancer if self._carried_balancer is not None else (
            None if balancer is None else balancer.state_dict())
        self._carried_balancer = None if carried is None else balancer_state_for(
            carried, plan.kept, plan.split, RankTimes().to_state())
        # Only what was made since the last forming is scanned (``gc.freeze``): a full
        # collection holds the interpreter, and with it this rank's heartbeat, for seconds
        # on a loaded machine.
        self.parts = None
        gc.collect()
        gc.freeze()
        self.optimizer.zero_grad(set_to_none=True)
        self.place = self.place.moved(plan, rank)
        if self.prefetcher is not None:
            self.prefetcher.rank = self.rank
        self.optim_step.world = self.world
        run.split, run.last_timed = plan.split, None

    def reform(self) -> None:
        """What depends on the group and this rank's place in it, made whole (at the start
        and at each membership generation): DDP, the tally, the active set, the balancer, the
        runner, the evaluator, the checkpointer; a change's sharded state re-sliced."""
        self.moves.reslice(self.rank, self.world, joining=self.group.joining is not None)
        loop = LoopParts(task=self.task, order=self.order, model=self.model,
                         parameters=self.parameters, optim_step=self.optim_step,
                         device=self.device, events=self.events, run=self.run,
                         stop_requested=lambda: self.stop.signum is not None,
                         prefetched=self._prefetcher_batch())
        self.parts = build_parts(loop, self.place, self._carried_balancer, self.group.flags,
                                 self.group.make_group)
        self._carried_balancer = None

    def training_state(self) -> dict[str, Any]:
        """The checkpointer's state of this rank (parameters, optimizer, positions, RNG)."""
        return self.built.checkpointer.state(self.run)

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Another rank's ``training_state``, loaded as a resume loads a checkpoint (this
        rank's newest checkpoint stays its own)."""
        run, state = self.run, self.moves.training_state(state)  # sharded: the whole state
        kept_checkpoint = run.checkpoint, run.checkpoint_step
        restore(("", state), model=self.model, optimizer=self.optimizer,
                load_training=self.optim_step.load_state_dict, run=run, world=self.world,
                policy=self.config.policy)
        run.checkpoint, run.checkpoint_step = kept_checkpoint

    def _prefetcher_batch(self) -> Callable[[int, Sequence[int]], Any] | None:
        prefetcher, run = self.prefetcher, self.run
        return (None if prefetcher is None
                else lambda step, split: prefetcher.batch(step, split, run.total_steps))

    def _announce(self, backend: str, first_split: Any, resumed_from: str | None) -> None:
        config, run = self.config, self.run
        model, dataset = task_label(config)
        joining = self.group.joining
        report_start(
            self.events, rank=self.rank, world=self.world, host=self.host,
            device=str(self.device), device_name=self.device_name, backend=backend,
            model=model, dataset=dataset, global_batch=config.global_batch, split=run.split,
            policy=config.policy, total_steps=run.total_steps,  # a joiner: the steps done
            step=joining.step if joining is not None else run.step,  # when it was let in
            steps_per_epoch=self.order.steps_per_epoch,
            slowdown=self.place.slowdown.factor_at(run.step + 1), resumed_from=resumed_from,
            task=config.task, precision=config.precision, tf32=tf32_enabled(),
            micro_batch=self.place.micro_batch[self.rank], **placement_fields(self.placement),
            **state_fields(config, self.optim_step, self.rank, self.device))
        if self.rank == 0:
            self.events.emit(CapacityEvent(
                t=time.time(), rank=0, source=first_split.source,
                samples_per_s=first_split.samples_per_s, max_batch=first_split.max_batch,
                detail=first_split.detail, micro_batch=first_split.micro_batch,
                **solo_fields(first_split.solo)))
            print0(f"corral trainer: {self.world} ranks ({backend}), {model} on {dataset}, "
                   f"B={config.global_batch} split {_csv(run.split)} ({first_split.source}), "
                   f"steps {run.step}->{run.total_steps}")

    # -- 5. Train ----------------------------------------------------------------------------
    def fit(self) -> None:
        """Train until the run's last step or a stop request, then finish (step 6)."""
        run = self.run
        resources = ResourceReporter(str(self.device), self.config.resources_every, self.rank,
                                     self.events)
        last_end = time.perf_counter()
        self.group.arm()
        while run.step < run.total_steps and not run.stopping:
            done = self.group.step(partial(self.train_step, run.step + 1), run.step + 1)
            if done is None:  # a member was lost: the step is redone in the next generation
                if run.left:
                    return
                continue
            now = time.perf_counter()
            step_s, last_end = now - last_end, now
            if not self.group.guarded(partial(self._after_step, done, step_s, resources)):
                if run.left:  # a member was lost after the step: it stands, the rest is not
                    return   # done (evaluation, checkpoint: at their next due step)
                continue
            if not self.group.boundary(done.tallies):
                return  # this rank's host left the run: nothing more to write

        # -- 6. Final checkpoint (also when stopped: the last step is complete) -------------
        resources.stop()
        if self.prefetcher is not None:
            self.prefetcher.close()
        parts = self.built
        parts.active.exact_now(run.split)  # the last checkpoint and the final result
        parts.checkpointer.save(run, last_step=True)
        if self.rank == 0 and run.step == run.total_steps:
            final = write_final(self.task, self.model, self.config.run_dir)
            print0(f"corral trainer: the trained result is in {final}")
            self._samples(run.step)
        # Leave together: no rank tears the group down while another still talks to it.
        dist.barrier()

    def _after_step(self, done: StepDone, step_s: float, resources: ResourceReporter) -> None:
        """What follows a completed step: its report, then evaluation, rebalance and
        checkpoint when due (with live membership a lost member interrupts it:
        ``_guarded``)."""
        run = self.run
        self._report(done, step_s=step_s)
        resources.poll(self.rank)  # a membership change may have moved this rank
        self._evaluate()
        self._rebalance()
        parts = self.built
        parts.active.exact_now(run.split, due=parts.checkpointer.due(run))
        parts.checkpointer.save(run)

    def _samples(self, step: int) -> None:
        """Rank 0: the task's generations from held-out prompts, as a ``samples`` event."""
        if self.task.samples is None:
            return
        written = self.task.samples(self.model)
        if written:
            self.events.emit(SamplesEvent(t=time.time(), rank=self.rank, step=step,
                                          prompts=tuple(p for p, _ in written),
                                          outputs=tuple(o for _, o in written)))

    def train_step(self, step: int) -> StepDone:
        """Run step ``step`` (1-based) on this rank and record it in ``RunProgress`` (its number,
        the stop flag, ``last_timed``); returns what it measured: every rank's tally of it,
        what the optimizer did, this rank's compute time. The host waits for the device once:
        at ``pending.read()``."""
        run, split, parts = self.run, self.run.split, self.built
        before = run.last_timed  # the step before, as this step's tally reports it
        # Forward + backward on the SUMMED loss of this rank's share, in micro-batch passes;
        # DDP all-reduces inside the last backward (trainer/step/accumulate.py, clock.py); a
        # benched rank (share 0) runs none and leaves the exchange (trainer/step/exchange.py).
        reported_exchange_s = before.exchange_s if before is not None else 0.0
        share = parts.runner.run(step, split, self.place.micro_batch[self.rank],
                                self.place.slowdown.factor_at(step), reported_exchange_s)
        # One small all-gather of every rank's tally (one tensor): a CPU rank's clock hook
        # started it inside the last backward (EarlyTally); other ranks start it here, with
        # the time their clock gives without waiting (a GPU's: the step before's) or, benched,
        # their probe's.
        pending = share.gather
        if pending is None:
            reported = (parts.clock.tally_time(step, before.compute if before else None)
                        if share.probed_s is None else ComputeTime(step, share.probed_s))
            pending = parts.tallies.start(share.loss_sum, share.units, reported,
                                         reported_exchange_s)
        # The gradient divided by the step's GLOBAL count of loss units (a device tensor), then
        # the optimizer step (skipped by a benched rank): queued before the host waits, so the
        # device keeps busy.
        outcome = parts.active.optimizer_step(step, split, pending.global_units())
        tallies = pending.read()
        if any(t.buffers_changed > 0 for t in tallies):  # an active rank's buffers everywhere
            parts.active.sync_buffers(split, parts.buffer_sync)
        run.step = step
        run.stopping = any(t.stop > 0 for t in tallies)
        # Every rank holds the same tallies, so a non-finite loss stops every rank here,
        # before the step is reported or checkpointed.
        check_finite_loss(sum(t.loss_sum for t in tallies), run)
        # This rank's compute time of this step: a GPU's events completed with the tally read.
        own_time = parts.clock.times(step)
        run.last_timed = TimedStep(step, tuple(split), own_time,
                                   self.optim_step.exchanged_s(share.exchanged_s))
        return StepDone(tallies, outcome, own_time.seconds, before)

    def _report(self, done: StepDone, step_s: float) -> None:
        """Events: every rank its own step (``report_step``: measurements only)."""
        run, config, tallies, outcome = self.run, self.config, done.tallies, done.outcome
        share = self.order.counts(run.step, run.split)[self.rank]
        tokens = (self.order.rank_tokens(run.step, run.split)
                  if self.order.item_tokens is not None else None)
        losses = [LossTally(loss_sum=t.loss_sum, units=t.units) for t in tallies]
        report_step(
            self.events, rank=self.rank, step=run.step, epoch=self.order.epoch_of(run.step),
            local_batch=share, tallies=losses, step_s=step_s, compute_s=done.compute_s,
            optimizer=OptimizerFacts(lr=outcome.lr, grad_norm=outcome.grad_norm,
                                     scaler_skipped=outcome.skipped, loss_scale=outcome.scale),
            passes=passes(share, self.place.micro_batch[self.rank]),
            tokens=tokens[self.rank] if tokens is not None else None)
        if self.built.balancer is not None:
            self._observe(self.built.balancer, done)
            self.built.balancer.observe_step(run.split, step_s)  # every decision's judge
        if self.rank == 0 and (run.step % 10 == 0 or run.step == run.total_steps):
            print0(f"step {run.step}/{run.total_steps} loss {global_loss_of(losses):.4f} "
                   f"{config.global_batch / step_s:.1f} samples/s split {_csv(run.split)}")

    def _observe(self, balancer: Balancer, done: StepDone) -> None:
        """Rank 0: every rank's compute time, paired with the split of the step it timed (a
        GPU rank's tally carries the step before's: trainer/step/tally.py)."""
        current, before = (self.run.step, tuple(self.run.split)), done.timed_before
        for step, split, seconds in timed_steps(done.tallies, [current] if before is None
                                                else [current, (before.step, before.split)]):
            tokens = (self.order.rank_tokens(step, split)
                      if self.order.item_tokens is not None else None)
            balancer.observe(split, seconds if tokens is None  # per share of tokens
                             else share_seconds(seconds, tokens, split))
        if before is not None:  # the tallies carry the step before's exchange
            balancer.observe_exchange(before.split, [t.exchange_s for t in done.tallies])

    def _evaluate(self) -> None:
        """The held-out set, when due (every rank at the same steps: it is collective)."""
        run, evaluator = self.run, self.built.evaluator
        if evaluator is not None and evaluator.due(run.step, run.total_steps):
            evaluator.run(run.step, run.split)

    def _rebalance(self) -> None:
        """Dynamic policy: rank 0 decides, every rank switches at the next step together."""
        run, config = self.run, self.config
        if (config.policy != "dynamic" or run.step % config.rebalance_every != 0
                or run.step >= run.total_steps or run.stopping):
            return
        balancer = self.built.balancer
        decision = balancer.decide(run.step) if balancer is not None else None
        new = broadcast_ints(decision.split if decision else run.split, self.device)
        if decision is not None and new != run.split:
            report_rebalance(self.events, decision, step=run.step + 1,
                             previous=decision.previous, split=new, policy=config.policy)
            print0(f"rebalance at step {run.step + 1}: {_csv(run.split)} -> {_csv(new)} "
                   f"({decision.reason})")
        self.built.active.switch(run.split, new)  # a rejoining rank gets the state first
        run.split = new


def _csv(values: Any) -> str:
    return ",".join(str(v) for v in values)
