"""The training loop: exact data-parallel training of a task over ranks with unequal batches.

Reads top to bottom: (1) check everything that can be checked alone and build the task (the
user's code runs here, so its errors end every rank before any collective), (2) join the
process group, (3) model, optimizer, maybe resume, (4) choose the first split, (5) train,
(6) checkpoint, write the final result and say goodbye. Every rank runs the same number of
steps and reaches every collective in the same order, so no rank waits for one that never
comes. The run's changing state lives in one ``RunProgress``.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist

from profiles.user_errors import CorralError, UsageError
from trainer.balance.balancer import Balancer
from trainer.balance.config import rank0_config
from trainer.balance.passes import passes
from trainer.checkpoint.checkpointer import Checkpointer, RunProgress, restore, resume, write_final
from trainer.compat import check_torch_release, set_tf32, tf32_enabled, wrap_ddp
from trainer.dist import (
    RankInfo,
    broadcast_ints,
    choose_backend,
    choose_device,
    destroy_process_group,
    device_name,
    init_process_group,
    on_any_rank,
    print0,
    rank_info,
)
from trainer.evaluate import Evaluator, held_out
from trainer.event_log import EventWriter, events_path
from trainer.events import CapacityEvent, EndEvent, EndStatus, SamplesEvent
from trainer.lowcomm.rounds import LocalTrainer
from trainer.placement import Placement, place_this_rank, placement_fields
from trainer.resources import ResourceReporter
from trainer.settings.syncbatch import check_syncbatch_passes
from trainer.settings.train_config import TrainConfig, check_world
from trainer.settings.training_checks import check_precision, check_total_steps, resolve_precision
from trainer.step.accumulate import ShareRunner
from trainer.step.batch_order import GlobalBatchOrder, share_seconds
from trainer.step.batches import collated
from trainer.step.capacity import initial_split
from trainer.step.clock import ComputeClock, EarlyTally
from trainer.step.exchange import ActiveSteps
from trainer.step.flat_collectives import BufferSync
from trainer.step.optim import OptimizerStep, StepDone, make_optimizer
from trainer.step.prefetch import BatchPrefetcher, prefetch_wanted
from trainer.step.slowdown import SlowdownSchedule, emulates
from trainer.step.tally import TallyExchange, timed_steps
from trainer.step_report import (
    LossTally,
    OptimizerFacts,
    global_loss_of,
    report_rebalance,
    report_start,
    report_step,
)
from trainer.stopping import Diverged, Interrupted, StopSignals, check_finite_loss
from trainer.tasks import Task, trainable_parameters
from trainer.tasks.loader import build_task, task_label


def train(config: TrainConfig) -> int:
    """Run training on this rank; returns the process exit code."""
    # -- 1. Who am I; everything that can fail alone fails here, before any collective -------
    check_torch_release(socket.gethostname())  # a torch corral is not tested with
    info = rank_info()
    check_world(config, info.world_size)
    device = choose_device(config.device, info.local_rank)
    # Cores and allocator before any parallel work: threads made later inherit the affinity.
    placement = place_this_rank(config, device, info.local_rank)
    torch.set_num_threads(placement.threads)
    backend = choose_backend(config.backend, device)
    if config.resolved_norm == "syncbatch" and device.type != "cuda":
        raise UsageError("--norm syncbatch needs every rank on CUDA (torch's SyncBatchNorm is "
                         "GPU-only); use --norm group on CPU ranks")
    # "auto" is decided for this rank's device; the start event then shows the decision.
    config = replace(config, precision=resolve_precision(config.precision, device))
    check_precision(config.precision, device)
    torch.manual_seed(config.seed)  # the task's model is the same on every rank
    task = build_task(config)
    # A balancing policy shares tokens when the task's items differ in length (no packing).
    order = GlobalBatchOrder(len(task.train_data), config.global_batch, config.seed,
                             task.item_tokens if config.policy != "static" else None,
                             padded=task.padded)
    run = RunProgress(total_steps=config.steps or (config.epochs or 1) * order.steps_per_epoch)
    check_total_steps(config, run.total_steps)
    if config.eval_every:
        held_out(task, config.eval_samples, f"the {config.task} task")
    events = EventWriter(events_path(config.run_dir, info.rank))
    stop = StopSignals()
    stop.install()

    status: EndStatus = "completed"
    error: str | None = None
    code = 0
    try:
        # -- 2. Join the process group (torchrun's rendezvous) ------------------------------
        init_process_group(backend, device, info)
        loop = LocalTrainer if config.exchange == "local" else Trainer  # local: APPROXIMATE
        loop(config, info, device, backend, task, order, events, stop, run, placement).fit()
        if run.step < run.total_steps:  # a rank got SIGINT/SIGTERM; all stopped together
            status, code = "interrupted", 128 + (stop.signum or signal.SIGTERM)
            error = (f"stopped by {signal.Signals(stop.signum).name}" if stop.signum
                     else "stopped: another rank was signalled")
    except Diverged as exc:
        status, error, code = "diverged", str(exc), exc.exit_code
    except Interrupted as exc:
        status, error, code = "interrupted", str(exc), 128 + (stop.signum or signal.SIGTERM)
    except CorralError as exc:
        status, error, code = "failed", f"{exc.title}: {exc.message}", exc.exit_code
    except Exception as exc:
        status, error, code = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0], 1
        raise
    finally:
        events.emit(EndEvent(t=time.time(), rank=info.rank, step=run.step, status=status,
                             checkpoint=run.checkpoint, error=error))
        events.close()
        destroy_process_group()
    if error and info.rank == 0:
        print(f"corral trainer: {error}", file=sys.stderr, flush=True)
    return code


class Trainer:
    """Steps 3 to 6 for one rank, after it joined the process group."""

    def __init__(self, config: TrainConfig, info: RankInfo, device: torch.device, backend: str,
                 task: Task, order: GlobalBatchOrder, events: EventWriter, stop: StopSignals,
                 run: RunProgress, placement: Placement | None = None) -> None:
        self.config, self.task, self.order, self.run = config, task, order, run
        self.placement = placement
        self.prefetcher = (BatchPrefetcher(task, order, info.rank, device)
                           if prefetch_wanted(config.prefetch, device) else None)
        self.rank, self.world, self.device = info.rank, info.world_size, device
        self.events, self.stop = events, stop
        self.slowdown = SlowdownSchedule(config.slowdown_for(self.rank), config.slowdown_at,
                                         self.rank)
        self.host, self.device_name = socket.gethostname(), device_name(device)

        # -- 3. Model and optimizer, identical on every rank; maybe resume -------------------
        set_tf32(config.precision == "tf32")  # torch's default lets cuDNN use TF32 even in fp32
        # Training mode: from_pretrained returns eval mode, which turns off checkpointing,
        # dropout and bitsandbytes' training path.
        self.model = task.model.to(device).train()
        self.parameters = trainable_parameters(task)
        if not self.parameters:
            raise UsageError(f"the {config.task} task has no parameter to train")
        self.optimizer = make_optimizer(config, self.parameters)
        self.optim_step = OptimizerStep(config, self.optimizer, self.parameters, device,
                                        self.world, run.total_steps)
        resumed_split, balancer_state, resumed_from = restore(
            resume(config, rank=self.rank, device=device), model=self.model,
            optimizer=self.optimizer, load_training=self.optim_step.load_state_dict, run=run,
            world=self.world, policy=config.policy)

        # -- 4. The first split: given, equal, or from capacities (profiles or a warm-up) ----
        first_split = initial_split(
            config, world_size=self.world, rank=self.rank, model=self.model, loss=task.loss,
            batch_of=lambda n: collated(task, range(min(n, len(task.train_data))), device),
            device=device, slowdown=self.slowdown.factor_at(run.step + 1), host=self.host,
            device_name=self.device_name, resumed_split=resumed_split)
        run.split, self.micro_batch = first_split.split, first_split.micro_batch
        check_syncbatch_passes(config.resolved_norm, self.micro_batch, run.split)
        self._announce(backend, first_split, resumed_from)

        self._wrap_model(config, device)
        self._timed_before: tuple[int, tuple[int, ...]] | None = None  # the step before's
        self.active = self._active_steps()
        self.balancer = self._balancer(first_split.max_batch, balancer_state)
        self.runner = ShareRunner(ddp=self.ddp, model=self.model, task=task, order=order,
                                  parameters=self.parameters, rank=self.rank, world=self.world,
                                  device=device, precision=config.precision, clock=self.clock,
                                  scale_loss=self.optim_step.scale_loss,
                                  prefetched=self._prefetcher_batch(), active=self.active.set)
        self.evaluator = Evaluator(
            task=task, data=held_out(task, config.eval_samples, config.task),
            every=config.eval_every, model=self.ddp, rank=self.rank, device=device,
            precision=config.precision, micro_batch=self.micro_batch, events=events,
        ) if config.eval_every else None
        self.checkpointer = Checkpointer(
            config, rank=self.rank, world=self.world, events=events, model=self.model,
            optimizer=self.optimizer, balancer=self.balancer, training=self.optim_step.state_dict)

    def _wrap_model(self, config: TrainConfig, device: torch.device) -> None:
        """DDP (its mean over ranks made exact by divide_by_global_units), the buffer sync (after
        a step that changed one, not at every forward), the tally exchange and the clock."""
        self.ddp = wrap_ddp(self.model, device)
        self.buffer_sync = BufferSync(self.model)
        # The step's tally: one device tensor, gathered once per step (trainer/step/tally.py);
        # a CPU rank's clock hook starts it inside the last backward (EarlyTally).
        self.tallies = TallyExchange(device, self.world,
                                     stop_requested=lambda: self.stop.signum is not None,
                                     buffers_changed=self.buffer_sync.changed,
                                     exchange_seconds=lambda: self.runner.previous_exchange_s)
        self.clock = ComputeClock(device, emulated_run=on_any_rank(
            emulates(config.slowdown, config.slowdown_at), device),
            early=EarlyTally(self.tallies))
        self.ddp.register_comm_hook(None, self.clock.hook)  # times the local backward

    def _active_steps(self) -> ActiveSteps:
        """Who takes part in the gradient exchange (trainer/step/exchange.py)."""
        return ActiveSteps(
            self.config, rank=self.rank, world=self.world, device=self.device, task=self.task,
            parameters=self.parameters, optim_step=self.optim_step,
            micro_batch=self.micro_batch[self.rank],
            slowdown=lambda: self.slowdown.factor_at(self.run.step)).start(self.run.split)

    def _prefetcher_batch(self) -> Callable[[int, Sequence[int]], Any] | None:
        prefetcher, run = self.prefetcher, self.run
        return (None if prefetcher is None
                else lambda step, split: prefetcher.batch(step, split, run.total_steps))

    def _balancer(self, max_batch: tuple[int | None, ...],
                  saved: dict[str, Any] | None) -> Balancer | None:
        """Rank 0's balancer. Memory caps learnt from stored profiles bind every later split."""
        if self.rank != 0:
            return None
        links = self.active.set.link_mbit
        balancer = Balancer(rank0_config(self.config, self.world, max_batch, self.micro_batch,
                                         links if any(links) else None), self.run.split)
        if saved is not None:
            balancer.load_state_dict(saved)
        return balancer

    def _announce(self, backend: str, first_split: Any, resumed_from: str | None) -> None:
        config, run = self.config, self.run
        model, dataset = task_label(config)
        report_start(
            self.events, rank=self.rank, world=self.world, host=self.host,
            device=str(self.device), device_name=self.device_name, backend=backend,
            model=model, dataset=dataset, global_batch=config.global_batch, split=run.split,
            policy=config.policy, step=run.step, total_steps=run.total_steps,
            steps_per_epoch=self.order.steps_per_epoch,
            slowdown=self.slowdown.factor_at(run.step + 1), resumed_from=resumed_from,
            task=config.task, precision=config.precision, tf32=tf32_enabled(),
            micro_batch=self.micro_batch[self.rank], **placement_fields(self.placement))
        if self.rank == 0:
            self.events.emit(CapacityEvent(
                t=time.time(), rank=0, source=first_split.source,
                samples_per_s=first_split.samples_per_s, max_batch=first_split.max_batch,
                detail=first_split.detail, micro_batch=first_split.micro_batch))
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
        while run.step < run.total_steps and not run.stopping:
            done = self.train_step(run.step + 1)
            now = time.perf_counter()
            self._report(done, step_s=now - last_end)
            last_end = now
            resources.poll()
            self._evaluate()
            self._rebalance()
            self.active.exact_now(run.split, due=self.checkpointer.due(run))
            self.checkpointer.save(run)

        # -- 6. Final checkpoint (also when stopped: the last step is complete) -------------
        resources.stop()
        if self.prefetcher is not None:
            self.prefetcher.close()
        self.active.exact_now(run.split)  # the last checkpoint and the final result
        self.checkpointer.save(run, last_step=True)
        if self.rank == 0 and run.step == run.total_steps:
            final = write_final(self.task, self.model, self.config.run_dir)
            print0(f"corral trainer: the trained result is in {final}")
            self._samples(run.step)
        # Leave together: no rank tears the group down while another still talks to it.
        dist.barrier()

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
        """Run step ``step`` (1-based) on this rank; what it measured: every rank's tally of it,
        what the optimizer did, this rank's compute time. The host waits for the device once:
        at ``pending.read()``."""
        # Forward + backward on the SUMMED loss of this rank's share, in micro-batch passes;
        # DDP all-reduces inside the last backward (trainer/step/accumulate.py, clock.py); a
        # benched rank (share 0) runs none and leaves the exchange (trainer/step/exchange.py).
        split = self.run.split
        totals = self.runner.run(step, split, self.micro_batch[self.rank],
                                 self.slowdown.factor_at(step))
        # One small all-gather of every rank's tally (one tensor): a CPU rank's clock hook
        # started it inside the last backward (EarlyTally); other ranks start it here.
        pending = self.clock.early.take() if self.clock.early is not None else None
        if pending is None:
            pending = self.tallies.start(totals.loss_sum, totals.units, (
                self.clock.tally_time(step) if totals.probed_s is None
                else (step, totals.probed_s)))
        # The gradient divided by the step's GLOBAL count of loss units (a device tensor), then
        # the optimizer step (skipped by a benched rank): queued before the host waits, so the
        # device keeps busy.
        outcome = self.active.optimizer_step(step, split, pending.global_units())
        tallies = pending.read()
        if any(t.buffers_changed > 0 for t in tallies):  # an active rank's buffers everywhere
            self.active.sync_buffers(split, self.buffer_sync)
        self.run.step = step
        self.run.stopping = any(t.stop > 0 for t in tallies)
        # Every rank holds the same tallies, so a non-finite loss stops every rank here,
        # before the step is reported or checkpointed.
        check_finite_loss(sum(t.loss_sum for t in tallies), self.run)
        # This rank's compute time: a GPU's events completed with the tally read (no wait).
        done = StepDone(tallies, outcome, self.clock.step_seconds(step), self._timed_before)
        self._timed_before = (step, tuple(split))
        return done

    def _report(self, done: StepDone, step_s: float) -> None:
        """Events: every rank its own step (``report_step``: measurements only)."""
        run, config, tallies, outcome = self.run, self.config, done.tallies, done.outcome
        share = self.order.counts(run.step, run.split)[self.rank]
        tokens = (self.order.rank_tokens(run.step, run.split)
                  if self.order.item_tokens is not None else None)
        losses = [LossTally(loss_sum=t.loss_sum, units=t.units) for t in tallies]
        report_step(
            self.events, rank=self.rank, step=run.step, epoch=self.order.epoch_of(run.step),
            local_batch=share, tallies=losses, step_s=step_s,
            compute_s=done.compute_s,
            optimizer=OptimizerFacts(lr=outcome.lr, grad_norm=outcome.grad_norm,
                                     scaler_skipped=outcome.skipped, loss_scale=outcome.scale),
            passes=passes(share, self.micro_batch[self.rank]),
            tokens=tokens[self.rank] if tokens is not None else None)
        if self.balancer is not None:
            self._observe(self.balancer, done)
        if self.rank == 0 and (run.step % 10 == 0 or run.step == run.total_steps):
            print0(f"step {run.step}/{run.total_steps} loss {global_loss_of(losses):.4f} "
                   f"{config.global_batch / step_s:.1f} samples/s split {_csv(run.split)}")

    def _observe(self, balancer: Balancer, done: StepDone) -> None:
        """Rank 0: every rank's compute time, paired with the split of the step it timed (a
        GPU rank's tally carries the step before's: trainer/step/tally.py)."""
        current, before = (self.run.step, tuple(self.run.split)), done.timed_before
        tallies = done.tallies
        for step, split, seconds in timed_steps(tallies, [current] if before is None
                                                else [current, before]):
            tokens = (self.order.rank_tokens(step, split)
                      if self.order.item_tokens is not None else None)
            balancer.observe(split, seconds if tokens is None  # per share of tokens
                             else share_seconds(seconds, tokens, split))
        if before is not None:  # the tallies carry the step before's exchange
            balancer.observe_exchange(before[1], [t.exchange_s for t in tallies])

    def _evaluate(self) -> None:
        """The held-out set, when due (every rank at the same steps: it is collective)."""
        run = self.run
        if self.evaluator is not None and self.evaluator.due(run.step, run.total_steps):
            self.evaluator.run(run.step, run.split)

    def _rebalance(self) -> None:
        """Dynamic policy: rank 0 decides, every rank switches at the next step together."""
        run, config = self.run, self.config
        if (config.policy != "dynamic" or run.step % config.rebalance_every != 0
                or run.step >= run.total_steps or run.stopping):
            return
        decision = self.balancer.decide(run.step) if self.balancer is not None else None
        new = broadcast_ints(decision.split if decision else run.split, self.device)
        if decision is not None and new != run.split:
            report_rebalance(self.events, decision, step=run.step + 1,
                             previous=decision.previous, split=new, policy=config.policy)
            print0(f"rebalance at step {run.step + 1}: {_csv(run.split)} -> {_csv(new)} "
                   f"({decision.reason})")
        self.active.switch(run.split, new)  # a rejoining rank gets the state first
        run.split = new


def _csv(values: Any) -> str:
    return ",".join(str(v) for v in values)
