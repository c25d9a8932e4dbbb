"""One rank's run: exact data-parallel training of a task over ranks with unequal batches.

Reads top to bottom: (1) check everything that can be checked alone and build the task (the
user's code runs here, so its errors end every rank before any collective), (2) join the
process group, then the loop: the exact one (trainer/exact_loop.py: (3) model, optimizer,
maybe resume, (4) the first split, (5) train, (6) checkpoint and the final result) or, with
``--exchange local``, the approximate low-communication one (trainer/lowcomm/rounds.py);
last, the end event and goodbye. Every rank runs the same number of steps and reaches every
collective in the same order, so no rank waits for one that never comes. The run's changing
state lives in one ``RunProgress``.
"""

from __future__ import annotations

import signal
import socket
import time
from dataclasses import replace

import torch

from profiles.user_errors import CorralError
from trainer.compat import check_torch_release
from trainer.disk_full import DiskFull, exit_status
from trainer.dist import (
    choose_backend,
    choose_device,
    destroy_process_group,
    rank_info,
    warn,
)
from trainer.evaluate import held_out
from trainer.events import EndEvent, EndStatus
from trainer.exact_loop import Trainer
from trainer.lowcomm.rounds import LocalTrainer
from trainer.membership.entry import join_run
from trainer.membership.members import Membership, join_group, rank_events
from trainer.placement import place_this_rank
from trainer.settings.syncbatch import check_syncbatch_device
from trainer.settings.train_config import TrainConfig, check_world
from trainer.settings.training_checks import check_total_steps, rank_precision
from trainer.step.batch_order import GlobalBatchOrder
from trainer.step.step_records import RunProgress
from trainer.stopping import Diverged, Interrupted, StopSignals
from trainer.tasks.loader import build_task


def train(config: TrainConfig) -> int:
    """Run training on this rank; returns the process exit code."""
    # -- 1. Who am I; everything that can fail alone fails here, before any collective -------
    check_torch_release(socket.gethostname())  # a torch corral is not tested with
    device = choose_device(config.device, (info := rank_info()).local_rank)
    # Cores and allocator before any parallel work: threads made later inherit the affinity.
    placement = place_this_rank(config, device, info.local_rank)
    torch.set_num_threads(placement.threads)
    backend = choose_backend(config.backend, device)
    check_syncbatch_device(config.resolved_norm, device.type)
    # "auto" is decided for this rank's device; the start event then shows the decision.
    config = replace(config, precision=rank_precision(config.precision, device))
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
    membership, info, config = join_run(config, info)  # a joiner asks set up: the run waits
    check_world(config, info.world_size)  # a joiner's: the generation's that admits it
    events = rank_events(config.run_dir, membership, info.rank)
    stop = StopSignals()
    stop.install()
    status: EndStatus = "completed"
    error: str | None = None
    code = 0
    try:
        # -- 2. Join the process group (torchrun's rendezvous) ------------------------------
        join_group(membership, backend, device, info)  # or its generation's, on the run's store
        parts = (config, info, device, backend, task, order, events, stop, run, placement)
        (LocalTrainer(*parts, membership) if config.exchange == "local"  # local: APPROXIMATE
         else Trainer(*parts, membership)).fit()
        status = "left" if run.left else status  # its host left; the others go on
        if not run.left and run.step < run.total_steps:  # signalled: every rank stopped
            status, code = "interrupted", 128 + (stop.signum or signal.SIGTERM)
            error = (f"stopped by {signal.Signals(stop.signum).name}" if stop.signum
                     else "stopped: another rank was signalled")
    except Diverged as exc:
        status, error, code = "diverged", str(exc), exc.exit_code
    except Interrupted as exc:
        status, error, code = "interrupted", str(exc), 128 + (stop.signum or signal.SIGTERM)
    except CorralError as exc:
        status, error, code = _failed(exc, membership)
    except Exception as exc:
        status, error, code = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0], 1
        raise
    finally:
        events.emit(EndEvent(t=time.time(), rank=membership.rank if membership else info.rank,
                             step=run.step, status=status, checkpoint=run.checkpoint,
                             error=error))
        events.close()
        destroy_process_group()
    if error:  # every rank's own: a failure on rank 2 is said by rank 2
        warn(f"corral trainer: {error}")
    return code


def _failed(exc: CorralError, membership: Membership | None) -> tuple[EndStatus, str, int]:
    """This rank's own error: its end event's status, error and the exit code. With live
    membership the others go on without its host, and rank 0 says why (``Membership.say``:
    a full disk on this host takes everything this rank would write there)."""
    error = f"{exc.title}: {exc.message}"
    if membership is not None:
        membership.say(exc.cause if isinstance(exc, DiskFull) else error)
    return "failed", error, exit_status(exc)
