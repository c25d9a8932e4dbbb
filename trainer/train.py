"""The training loop: exact data-parallel training of a task over ranks with unequal batches.

Reads top to bottom: (1) check everything that can be checked alone and build the task (the
user's code runs here, so its errors end every rank before any collective), (2) join the
process group, (3) model, optimizer, maybe resume, (4) choose the first split, (5) train,
(6) checkpoint, write the final result and say goodbye. Every rank runs the same number of
steps and reaches every collective in the same order, so no rank waits for one that never
comes. The run's changing state lives in one ``RunState``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from profiles.user_errors import CorralError, UsageError
from trainer.balance.balancer import Balancer
from trainer.balance.capacity import initial_split
from trainer.balance.config import rank0_config
from trainer.balance.passes import passes
from trainer.checkpoint.checkpointer import (
    Checkpointer,
    RunState,
    load_model_state,
    resume,
    write_final,
)
from trainer.checkpoint.files import set_rng_state
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
from trainer.events import (
    CapacityEvent,
    EndEvent,
    EndStatus,
    EventWriter,
    RebalanceEvent,
    SamplesEvent,
    StartEvent,
    StepEvent,
    events_path,
)
from trainer.placement import Placement, place_this_rank, start_fields
from trainer.resources import ResourceReporter
from trainer.settings.train_config import TrainConfig, check_world
from trainer.settings.training_checks import check_precision, check_total_steps, resolve_precision
from trainer.step.accumulate import BufferSync, ShareRunner
from trainer.step.batch_order import GlobalBatchOrder, share_seconds
from trainer.step.batches import collated
from trainer.step.clock import ComputeClock
from trainer.step.exchange import ActiveSteps
from trainer.step.optim import OptimizerStep, StepOutcome, make_optimizer
from trainer.step.prefetch import BatchPrefetcher, prefetch_wanted
from trainer.step.slowdown import SlowdownSchedule, emulates
from trainer.step.tally import StepTally, start_gather_tallies
from trainer.stopping import Diverged, Interrupted, StopSignals, check_finite_loss
from trainer.tasks import Task, trainable_parameters
from trainer.tasks.loader import build_task, task_label


def train(config: TrainConfig) -> int:
    """Run training on this rank; returns the process exit code."""
    # -- 1. Who am I; everything that can fail alone fails here, before any collective -------
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
    run = RunState(total_steps=config.steps or (config.epochs or 1) * order.steps_per_epoch)
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
        Trainer(config, info, device, backend, task, order, events, stop, run,
                placement=placement).fit()
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
                 run: RunState, placement: Placement | None = None) -> None:
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
        # Training mode: from_pretrained returns eval mode, which turns off checkpointing,
        # dropout and bitsandbytes' training path.
        self.model = task.model.to(device).train()
        self.parameters = trainable_parameters(task)
        if not self.parameters:
            raise UsageError(f"the {config.task} task has no parameter to train")
        self.optimizer = make_optimizer(config, self.parameters)
        self.optim_step = OptimizerStep(config, self.optimizer, self.parameters, device,
                                        self.world, run.total_steps)
        resumed = resume(config, rank=self.rank, device=device)
        resumed_split, balancer_state, resumed_from = self._restore(resumed)

        # -- 4. The first split: given, equal, or from capacities (profiles or a warm-up) ----
        first_split = initial_split(
            config, world_size=self.world, rank=self.rank, model=self.model, loss=task.loss,
            batch_of=lambda n: collated(task, range(min(n, len(task.train_data))), device),
            device=device, slowdown=self.slowdown.factor_at(run.step + 1), host=self.host,
            device_name=self.device_name, resumed_split=resumed_split)
        run.split, self.micro_batch = first_split.split, first_split.micro_batch
        self.balancer = self._balancer(first_split.max_batch, balancer_state)
        self._announce(backend, first_split, resumed_from)

        # DDP averages gradients over ranks; divide_by_global_units turns that into the exact
        # mean over the step's units. The comm hook times local backward (trainer/step/clock.py).
        # Buffers are synced after a step that changed one (BufferSync), not at every forward.
        self.ddp = DDP(self.model, device_ids=[device.index] if device.type == "cuda" else None,
                       forward_sync_buffers=False)
        self.buffer_sync = BufferSync(self.model)
        self.clock = ComputeClock(device, emulated_run=on_any_rank(
            emulates(config.slowdown, config.slowdown_at), device))
        self.ddp.register_comm_hook(None, self.clock.hook)
        self.active = self._active_steps()
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
        self.checkpointer = Checkpointer(config, rank=self.rank, world=self.world, events=events,
                                         model=self.model, optimizer=self.optimizer,
                                         balancer=self.balancer,
                                         training=self.optim_step.state_dict)

    def _active_steps(self) -> ActiveSteps:
        """Who takes part in the gradient exchange (trainer/step/exchange.py)."""
        return ActiveSteps(
            self.config, rank=self.rank, world=self.world, device=self.device, task=self.task,
            parameters=self.parameters, optim_step=self.optim_step,
            micro_batch=self.micro_batch[self.rank],
            slowdown=lambda: self.slowdown.factor_at(self.run.step)).start(self.run.split)

    def _prefetcher_batch(self) -> Callable[[int, Sequence[int]], Any] | None:
        prefetcher, run = self.prefetcher, self.run
        if prefetcher is None:
            return None
        return lambda step, split: prefetcher.batch(step, split, run.total_steps)

    def _restore(
        self, resumed: tuple[str, dict[str, Any]] | None
    ) -> tuple[tuple[int, ...] | None, dict[str, Any] | None, str | None]:
        """Load a resumed checkpoint: ``(split, balancer state, path)`` to continue with."""
        if resumed is None:
            return None, None, None
        path, state = resumed
        load_model_state(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.optim_step.load_state_dict(state.get("training"))
        set_rng_state(state["rng"])
        self.run.step = self.run.checkpoint_step = int(state["step"])
        self.run.checkpoint = path
        if state["world_size"] == self.world and state["policy"] == self.config.policy:
            return tuple(state["split"]), state["balancer"], path
        return None, None, path

    def _balancer(self, max_batch: tuple[int | None, ...],
                  saved: dict[str, Any] | None) -> Balancer | None:
        """Rank 0's balancer. Memory caps learnt from stored profiles bind every later split."""
        if self.rank != 0:
            return None
        balancer = Balancer(rank0_config(self.config, self.world, max_batch, self.micro_batch),
                            self.run.split)
        if saved is not None:
            balancer.load_state_dict(saved)
        return balancer

    def _announce(self, backend: str, first_split: Any, resumed_from: str | None) -> None:
        config, run = self.config, self.run
        model, dataset = task_label(config)
        self.events.emit(StartEvent(
            t=time.time(), rank=self.rank, world_size=self.world,
            local_rank=int(os.environ.get("LOCAL_RANK", "0")), host=self.host, pid=os.getpid(),
            device=str(self.device), device_name=self.device_name, backend=backend,
            model=model, dataset=dataset, global_batch=config.global_batch, split=run.split,
            policy=config.policy, step=run.step, total_steps=run.total_steps,
            steps_per_epoch=self.order.steps_per_epoch, threads=torch.get_num_threads(),
            slowdown=self.slowdown.factor_at(run.step + 1), resumed_from=resumed_from,
            task=config.task, precision=config.precision,
            micro_batch=self.micro_batch[self.rank],
            **start_fields(self.placement)))
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
            tallies, outcome = self.train_step(run.step + 1)
            now = time.perf_counter()
            self._report(tallies, outcome, step_s=now - last_end)
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

    def train_step(self, step: int) -> tuple[list[StepTally], StepOutcome]:
        """Run step ``step`` (1-based) on this rank; every rank's tally of it, by rank, and
        what the optimizer did."""
        # Forward + backward on the SUMMED loss of this rank's slice of the global batch, in
        # micro-batch passes (trainer/step/accumulate.py). DDP all-reduces inside the last backward;
        # an emulated slow device (--slowdown) finishes later: the clock's hook waits before
        # the last all-reduce, and compute_s includes that time.
        # Then one small all-gather: every rank's loss sum, unit count, compute time and stop
        # request (started inside the last backward on CPU ranks: see ShareRunner.run).
        def start_tally(loss_sum: float, units: float, compute_s: float
                        ) -> Callable[[], list[StepTally]]:
            mine = StepTally(loss_sum=loss_sum, units=units, compute_s=compute_s,
                             stop=1.0 if self.stop.signum is not None else 0.0,
                             buffers_changed=1.0 if self.buffer_sync.changed() else 0.0,
                             exchange_s=self.runner.exchanged_s)
            return start_gather_tallies(mine, self.device)

        tallies = self.runner.run(step, self.run.split, self.micro_batch[self.rank],
                                  self.slowdown.factor_at(step), start_tally)()
        # Rank 0's buffers (BatchNorm statistics) everywhere, only when a forward changed one:
        # here, where the ranks have just met, the broadcast adds no wait.
        if any(t.buffers_changed > 0 for t in tallies):
            self.buffer_sync.sync(self.active.source(self.run.split))

        # The gradient divided by the step's GLOBAL count of loss units (see step/tally.py), then
        # unscale (fp16), clip, the step's learning rate, and the optimizer step.
        outcome = self.active.optimizer_step(step, self.run.split, sum(t.units for t in tallies))
        self.run.step = step
        self.run.stopping = any(t.stop > 0 for t in tallies)
        # Every rank holds the same tallies, so a non-finite loss stops every rank here,
        # before the step is reported or checkpointed.
        check_finite_loss(sum(t.loss_sum for t in tallies), self.run)
        return tallies, outcome

    def _report(self, tallies: list[StepTally], outcome: StepOutcome, step_s: float) -> None:
        """Events: every rank its own step; rank 0 adds the global loss and throughput."""
        run, config, mine = self.run, self.config, tallies[self.rank]
        share = self.order.counts(run.step, run.split)[self.rank]
        tokens = (self.order.rank_tokens(run.step, run.split)
                  if self.order.item_tokens is not None else None)
        global_loss = sum(t.loss_sum for t in tallies) / max(sum(t.units for t in tallies), 1)
        self.events.emit(StepEvent(
            t=time.time(), rank=self.rank, step=run.step, epoch=self.order.epoch_of(run.step),
            local_batch=share, loss=mine.loss_sum / max(mine.units, 1), compute_s=mine.compute_s,
            step_s=step_s, samples_per_s=share / step_s, loss_units=int(mine.units),
            global_loss=global_loss if self.rank == 0 else None,
            cluster_samples_per_s=config.global_batch / step_s if self.rank == 0 else None,
            lr=outcome.lr, grad_norm=outcome.grad_norm, scaler_skipped=outcome.skipped,
            loss_scale=outcome.scale,
            passes=passes(share, self.micro_batch[self.rank]),
            tokens=tokens[self.rank] if tokens is not None else None))
        if self.balancer is not None:
            seconds = [t.compute_s for t in tallies]
            self.balancer.observe(run.split, seconds if tokens is None  # per share of tokens
                                  else share_seconds(seconds, tokens, run.split))
            self.balancer.observe_exchange([t.exchange_s for t in tallies])  # the last step's
        if self.rank == 0 and (run.step % 10 == 0 or run.step == run.total_steps):
            print0(f"step {run.step}/{run.total_steps} loss {global_loss:.4f} "
                   f"{config.global_batch / step_s:.1f} samples/s split {_csv(run.split)}")

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
            self.events.emit(RebalanceEvent(
                t=time.time(), rank=0, step=run.step + 1, previous=decision.previous,
                split=new, reason=decision.reason, predicted_gain=decision.predicted_gain,
                times=decision.times, policy=config.policy))
            print0(f"rebalance at step {run.step + 1}: {_csv(run.split)} -> {_csv(new)} "
                   f"({decision.reason})")
        self.active.switch(run.split, new)  # a rejoining rank gets the state first
        run.split = new


def _csv(values: Any) -> str:
    return ",".join(str(v) for v in values)
