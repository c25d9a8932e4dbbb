"""The training loop: exact data-parallel SGD over ranks with unequal local batches.

Reads top to bottom: (1) check everything that can be checked alone, (2) join the process
group, (3) build model and optimizer and maybe resume, (4) choose the first split, (5) train,
(6) checkpoint and say goodbye. Every rank runs the same number of steps, and every collective
is reached by every rank in the same order, so no rank ever waits for one that never comes.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
import time
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from profiles.errors import CorralError, UsageError
from trainer.balancer import Balancer, BalancerConfig
from trainer.capacity import initial_split
from trainer.checkpoint import load_newest_checkpoint, rng_state, save_checkpoint, set_rng_state
from trainer.clock import ComputeClock
from trainer.config import TrainConfig, check_world
from trainer.data import GlobalBatchOrder, ImageDataset, build_dataset
from trainer.dist import (
    broadcast_ints,
    choose_backend,
    choose_device,
    destroy_process_group,
    device_name,
    init_process_group,
    print0,
    rank_info,
    start_all_gather_floats,
)
from trainer.events import (
    CapacityEvent,
    CheckpointEvent,
    EndEvent,
    EndStatus,
    EventWriter,
    RebalanceEvent,
    StartEvent,
    StepEvent,
    events_path,
)
from trainer.models import build_model
from trainer.resources import ResourceReporter
from trainer.slowdown import SlowdownSchedule


class Interrupted(Exception):
    """A second SIGINT/SIGTERM arrived: abandon the current step."""


class StopSignals:
    """SIGINT/SIGTERM: the first asks every rank to stop after the current step (agreed through
    the per-step all-gather); another one later than ``ABANDON_AFTER_S`` abandons the step.

    Repeats within that window are the same request arriving twice: a process-group kill
    reaches the rank directly and again through torchrun, and Ctrl-C reaches both as well.
    """

    ABANDON_AFTER_S = 2.0

    def __init__(self) -> None:
        self.signum: int | None = None
        self._first_at = 0.0

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first_at = signum, now
        elif now - self._first_at > self.ABANDON_AFTER_S:
            raise Interrupted(f"abandoned the step on a second {signal.Signals(signum).name}")


def train(config: TrainConfig) -> int:
    """Run training on this rank; returns the process exit code."""
    # -- 1. Who am I; everything that can fail alone fails here, before any collective -------
    info = rank_info()
    rank, world = info.rank, info.world_size
    check_world(config, world)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = choose_device(config.device, info.local_rank)
    backend = choose_backend(config.backend, device)
    if config.resolved_norm == "syncbatch" and device.type != "cuda":
        raise UsageError("--norm syncbatch needs every rank on CUDA (torch's SyncBatchNorm is "
                         "GPU-only); use --norm group on CPU ranks")
    bconfig = BalancerConfig(
        policy=config.policy, global_batch=config.global_batch, world_size=world,
        rebalance_every=config.rebalance_every, max_batch=config.max_batch,
        threshold=config.rebalance_threshold,
    )
    if config.split is not None:
        Balancer(bconfig, config.split)  # raises for a split that breaks a --max-batch cap
    dataset = build_dataset(config.dataset, data_dir=config.data_dir, samples=config.samples,
                            seed=config.seed)
    order = GlobalBatchOrder(len(dataset), config.global_batch, config.seed)
    total_steps = config.steps or (config.epochs or 1) * order.steps_per_epoch
    slowdown = SlowdownSchedule(config.slowdown_for(rank), config.slowdown_at, rank)
    events = EventWriter(events_path(config.run_dir, rank))
    stop = StopSignals()
    stop.install()

    progress: dict[str, Any] = {"step": 0, "checkpoint": None}
    status: EndStatus = "completed"
    error: str | None = None
    code = 0
    try:
        # -- 2. Join the process group (torchrun's rendezvous) ------------------------------
        init_process_group(backend, device, info)
        stopped = _run(
            config, rank=rank, world=world, local_rank=info.local_rank, device=device,
            backend=backend, bconfig=bconfig, dataset=dataset, order=order,
            total_steps=total_steps, slowdown=slowdown, events=events, stop=stop,
            progress=progress,
        )
        if stopped:  # some rank got SIGINT/SIGTERM; every rank stopped after the same step
            signum = stop.signum or signal.SIGTERM
            status, code = "interrupted", 128 + signum
            error = (f"stopped by {signal.Signals(stop.signum).name}" if stop.signum
                     else "stopped: another rank was signalled")
    except Interrupted as exc:
        status, error, code = "interrupted", str(exc), 128 + (stop.signum or signal.SIGTERM)
    except CorralError as exc:
        status, error, code = "failed", f"{exc.title}: {exc.message}", exc.exit_code
    except Exception as exc:
        status, error, code = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0], 1
        raise
    finally:
        events.emit(EndEvent(t=time.time(), rank=rank, step=progress["step"], status=status,
                             checkpoint=progress["checkpoint"], error=error))
        events.close()
        destroy_process_group()
    if error and rank == 0:
        print(f"corral trainer: {error}", file=sys.stderr, flush=True)
    return code


def _run(config: TrainConfig, *, rank: int, world: int, local_rank: int, device: torch.device,
         backend: str, bconfig: BalancerConfig, dataset: ImageDataset, order: GlobalBatchOrder,
         total_steps: int, slowdown: SlowdownSchedule, events: EventWriter, stop: StopSignals,
         progress: dict[str, Any]) -> bool:
    """Steps 3 to 6 (after joining the group); True when a signal stopped it early."""
    B = config.global_batch
    host, dev_name = socket.gethostname(), device_name(device)

    # -- 3. Model and optimizer, identical on every rank; maybe resume -----------------------
    torch.manual_seed(config.seed)
    model = build_model(config.model, dataset.num_classes, config.resolved_norm).to(device)
    optimizer = _optimizer(config, model)
    resumed = _resume(config, rank=rank, world=world, device=device)
    step, resumed_from, resumed_split, balancer_state = 0, None, None, None
    if resumed is not None:
        resumed_from, state = resumed
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        step = int(state["step"])
        progress.update(checkpoint=resumed_from, checkpoint_step=step)
        if state["world_size"] == world and state["policy"] == config.policy:
            resumed_split = tuple(state["split"])
            balancer_state = state["balancer"]
    progress["step"] = step

    # -- 4. The first split: given, equal, or from capacities (profiles or a warm-up) --------
    first = initial_split(config, world_size=world, rank=rank, model=model, dataset=dataset,
                          device=device, slowdown=slowdown.factor_at(step + 1), host=host,
                          device_name=dev_name, resumed_split=resumed_split)
    split = first.split
    # Memory caps learnt from stored profiles bind every later split, not only the first.
    if any(cap is not None for cap in first.max_batch):
        bconfig = dataclasses.replace(bconfig, max_batch=first.max_batch)
    balancer = Balancer(bconfig, split) if rank == 0 else None
    if balancer is not None and balancer_state is not None:
        balancer.load_state_dict(balancer_state)
    events.emit(StartEvent(
        t=time.time(), rank=rank, world_size=world, local_rank=local_rank, host=host,
        pid=os.getpid(), device=str(device), device_name=dev_name, backend=backend,
        model=config.model, dataset=config.dataset, global_batch=B, split=split,
        policy=config.policy, step=step, total_steps=total_steps,
        steps_per_epoch=order.steps_per_epoch, threads=torch.get_num_threads(),
        slowdown=slowdown.factor_at(step + 1), resumed_from=resumed_from))
    if rank == 0:
        events.emit(CapacityEvent(t=time.time(), rank=0, source=first.source,
                                  samples_per_s=first.samples_per_s, max_batch=first.max_batch,
                                  detail=first.detail))
        print0(f"corral trainer: {world} ranks ({backend}), {config.model} on {config.dataset}, "
               f"B={B} split {_csv(split)} ({first.source}), steps {step}->{total_steps}")

    # DDP averages gradients over ranks; the loss scaling below turns that into the exact
    # mean over B. The comm hook timestamps the end of local backward (see trainer/clock.py).
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    clock = ComputeClock(device)
    ddp.register_comm_hook(None, clock.hook)
    resources = ResourceReporter(str(device), config.resources_every, rank, events)

    # -- 5. Train ------------------------------------------------------------------------------
    last_end = time.perf_counter()
    stopping = False
    while step < total_steps:
        # Data: this rank's slice of the step's B samples (prefix sums of the split).
        step_index = step
        epoch = order.epoch_of(step_index)
        x, y = dataset.batch(order.local_indices(step_index, split, rank))
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        local_batch = split[rank]

        # Forward + backward. The all-reduce runs inside backward, overlapped by DDP.
        # An emulated slow device (--slowdown) finishes its backward later: the clock's hook
        # waits before the last all-reduce, and compute_s includes that time.
        clock.start(slowdown.factor_at(step + 1))
        loss_sum = nn.functional.cross_entropy(ddp(x), y, reduction="sum")
        exact_mean_over_global_batch(loss_sum, world, B).backward()
        compute_s = clock.elapsed()

        # One small all-gather (global loss, every rank's compute time, any stop request),
        # started now so that it overlaps the optimizer step.
        stop_flag = 1.0 if stop.signum is not None else 0.0
        gathered = start_all_gather_floats([loss_sum.item(), compute_s, stop_flag], device)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress["step"] = step
        rows = gathered()
        now = time.perf_counter()
        step_s, last_end = now - last_end, now
        stopping = any(row[2] > 0 for row in rows)

        # Events: every rank its own step; rank 0 adds the global loss and cluster throughput.
        events.emit(StepEvent(
            t=time.time(), rank=rank, step=step, epoch=epoch, local_batch=local_batch,
            loss=rows[rank][0] / max(local_batch, 1), compute_s=compute_s, step_s=step_s,
            samples_per_s=local_batch / step_s,
            global_loss=sum(r[0] for r in rows) / B if rank == 0 else None,
            cluster_samples_per_s=B / step_s if rank == 0 else None))
        resources.poll()
        if balancer is not None:
            balancer.observe(split, [r[1] for r in rows])
        if rank == 0 and (step % 10 == 0 or step == total_steps):
            print0(f"step {step}/{total_steps} loss {sum(r[0] for r in rows) / B:.4f} "
                   f"{B / step_s:.1f} samples/s split {_csv(split)}")

        # Rebalance (dynamic): rank 0 decides, every rank switches at the next step together.
        if (config.policy == "dynamic" and step % config.rebalance_every == 0
                and step < total_steps and not stopping):
            decision = balancer.decide(step) if balancer is not None else None
            new = broadcast_ints(decision.split if decision else split, device)
            if decision is not None and new != split:
                events.emit(RebalanceEvent(
                    t=time.time(), rank=0, step=step + 1, previous=decision.previous,
                    split=new, reason=decision.reason, predicted_gain=decision.predicted_gain,
                    times=decision.times, policy=config.policy))
                print0(f"rebalance at step {step + 1}: {_csv(split)} -> {_csv(new)} "
                       f"({decision.reason})")
            split = new

        # Checkpoint: rank 0 only, every K steps (the final one is written below).
        if (rank == 0 and config.checkpoint_every and step % config.checkpoint_every == 0
                and step < total_steps and not stopping):
            _checkpoint(config, ddp.module, optimizer, balancer, split, step, order, world,
                        events, progress)
        if stopping:
            break

    # -- 6. Final checkpoint (also when stopped by a signal: the last step is complete) ------
    resources.stop()
    if rank == 0 and step > 0 and not _has_checkpoint(progress, step):
        _checkpoint(config, ddp.module, optimizer, balancer, split, step, order, world,
                    events, progress)
    # Leave together: no rank tears the group down while another still talks to it.
    dist.barrier()
    return step < total_steps


def exact_mean_over_global_batch(
    loss_sum: torch.Tensor, world_size: int, global_batch: int
) -> torch.Tensor:
    """The loss to call backward() on so the gradient is the exact mean over all B samples.

    DDP all-reduces gradients and divides by the world size. Scaling each rank's SUMMED loss
    by ``world_size / B`` turns that into ``(1/B) * sum of the B per-sample gradients``,
    whatever the split. (Averaging per-rank MEAN losses would over-weight small local batches.)
    """
    return loss_sum * (world_size / global_batch)


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9,
                           weight_decay=config.weight_decay)


def _resume(
    config: TrainConfig, *, rank: int, world: int, device: torch.device
) -> tuple[str, dict[str, Any]] | None:
    """Rank 0 reads the newest complete checkpoint and broadcasts it (no shared filesystem).

    Collective whenever ``--resume`` is given: every rank gets the same answer or error.
    """
    if not config.resume:
        return None
    payload: dict[str, Any] = {"state": None, "path": None, "error": None}
    if rank == 0:
        try:
            found = load_newest_checkpoint(config.run_dir)
        except OSError as exc:
            found, payload["error"] = None, f"cannot read checkpoints in {config.run_dir}: {exc}"
        if found is not None:
            path, state, skipped = found
            mismatch = _identity_mismatch(config, state.get("run", {}))
            if mismatch:
                payload["error"] = f"{path} belongs to a different run ({mismatch})"
            else:
                payload.update(state=state, path=str(path))
                for note in skipped:
                    print0(f"corral trainer: skipped incomplete checkpoint {note}")
        elif payload["error"] is None:
            print0(f"corral trainer: no checkpoint in {config.run_dir}; starting fresh")
    box = [payload]
    dist.broadcast_object_list(box, src=0, device=device)
    payload = box[0]
    if payload["error"]:
        raise UsageError(payload["error"])
    if payload["state"] is None:
        return None
    return payload["path"], payload["state"]


def _identity(config: TrainConfig) -> dict[str, Any]:
    """What must match for a checkpoint to continue this run."""
    return {"model": config.model, "norm": config.resolved_norm, "dataset": config.dataset,
            "samples": config.samples, "global_batch": config.global_batch,
            "seed": config.seed, "optimizer": config.optimizer}


def _identity_mismatch(config: TrainConfig, saved: dict[str, Any]) -> str:
    ours = _identity(config)
    return ", ".join(f"{k} {saved.get(k)!r} != {v!r}" for k, v in ours.items()
                     if saved.get(k) != v)


def _checkpoint(config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                balancer: Balancer | None, split: tuple[int, ...], step: int,
                order: GlobalBatchOrder, world: int, events: EventWriter,
                progress: dict[str, Any]) -> None:
    state = {
        "step": step, "epoch": order.epoch_of(step), "samples_seen": step * config.global_batch,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "split": list(split), "policy": config.policy, "world_size": world,
        "balancer": balancer.state_dict() if balancer is not None else None,
        "rng": rng_state(), "run": _identity(config),
    }
    path = save_checkpoint(config.run_dir, state, keep=config.keep_checkpoints)
    progress["checkpoint"], progress["checkpoint_step"] = str(path), step
    events.emit(CheckpointEvent(t=time.time(), rank=0, step=step, path=str(path)))


def _has_checkpoint(progress: dict[str, Any], step: int) -> bool:
    return progress.get("checkpoint_step") == step


def _csv(values: Any) -> str:
    return ",".join(str(v) for v in values)
