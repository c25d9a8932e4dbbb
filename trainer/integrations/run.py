"""One rank of a user's script under corral: its shares and its events.

``ScriptRun`` is what the Hugging Face opt-in (``hf.py``) and the plain-DDP helper (``ddp.py``)
share: the ``ShareSchedule`` (which split each step uses), the rank's ``EventWriter`` on
``RunLayout(run_dir).events(rank)`` (the same typed events as corral's own loop, so the console,
``corral report`` and TensorBoard read a script's run unchanged), and the one collective per
step that gathers every rank's loss, loss units and compute time, lets rank 0's balancer decide
and tells every rank the new split.

That gather is the step's one host wait of corral's own, as in corral's loop
(``trainer/step/tally.py``): the loss and its units stay device tensors until they are packed
with the compute time into one tensor, gathered and read once; a GPU rank's compute time is read
after that read (its CUDA events are complete then), so the gathered tally carries the step
before's, and rank 0's balancer pairs each time with the share of the step it timed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.distributed as dist

from trainer.compat import tf32_enabled
from trainer.dist import broadcast_ints, device_name
from trainer.event_log import EventWriter, events_path
from trainer.events import CheckpointEvent, EndEvent, EndStatus, EvalEvent
from trainer.integrations.contract import ScriptSettings
from trainer.integrations.shares import ShareSchedule
from trainer.resources import ResourceReporter
from trainer.settings.train_config import TrainConfig
from trainer.step.clock import StepClock
from trainer.step.tally import ComputeTime, PendingTallies
from trainer.step_report import (
    LossTally,
    OptimizerFacts,
    report_rebalance,
    report_start,
    report_step,
)


class ScriptRun:
    """This rank's schedule and events (build it once the process group exists)."""

    made: ClassVar[bool] = False
    """Whether this process built one: the script took corral's opt-in, which writes its own
    events (``script_main`` writes a start, a step per optimizer step and an end event for a
    script without it: ``plain_events``)."""
    newest: ClassVar[ScriptRun | None] = None
    """The one this process built last: a TERM (``corral stop``) writes its ``interrupted``
    end through it (``plain_events``), since the opt-in's own end runs at exit, which the
    signal's default action skips."""

    def __init__(self, settings: ScriptSettings, *, global_batch: int, device: torch.device,
                 lead: int = 2, min_share: int = 1, batch_source: str = "",
                 schedule: ShareSchedule | None = None, member: int | None = None) -> None:
        """``schedule``: a live joiner's (its generation's rank, world and split); ``member``:
        its member id with live membership (its events file; else the rank's)."""
        self.settings, self.device = settings, device
        ScriptRun.made, ScriptRun.newest = True, self
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.schedule = schedule or ShareSchedule(
            settings, global_batch=global_batch, world=self.world, rank=self.rank, lead=lead,
            min_share=min_share, batch_source=batch_source)
        self.rank, self.world = self.schedule.rank, self.schedule.world
        self.events = EventWriter(events_path(settings.run_dir,
                                              self.rank if member is None else member))
        self.flags: Callable[[], tuple[float, float]] | None = None
        """Live membership: this rank's ``(leave, joiners)`` for each step's tally."""
        self.step = 0
        self._last_end = time.perf_counter()
        self._ended = False
        self._resources = ResourceReporter(str(device), TrainConfig.resources_every,
                                           self.rank, self.events)
        """The rank's resource samples, as corral's own ranks have (polled after each step)."""
        self._timed: ComputeTime | None = None
        """This rank's compute time of its last reported step (a GPU rank's next tally)."""

    @property
    def global_batch(self) -> int:
        return self.schedule.global_batch

    def start(self, *, model: str, dataset: str, step: int, total_steps: int,
              steps_per_epoch: int, exact: bool = True, exact_note: str = "",
              resumed_from: str | None = None, precision: str = "fp32") -> None:
        """The start event (every rank), once training is about to begin."""
        self.step = step
        self.schedule.last_step = max(total_steps, 0)
        report_start(
            self.events, rank=self.rank, world=self.world, host=socket.gethostname(),
            device=str(self.device), device_name=device_name(self.device),
            backend=dist.get_backend() if dist.is_initialized() else "none", model=model,
            dataset=dataset, global_batch=self.global_batch,
            split=self.schedule.split_at_quietly(step + 1), policy=self.settings.policy,
            step=step, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
            slowdown=self.settings.slowdown_of(self.rank), resumed_from=resumed_from,
            task="script", exact=exact, exact_note=exact_note, precision=precision,
            tf32=self.device.type == "cuda" and tf32_enabled())
        self._last_end = time.perf_counter()

    def moved(self, schedule: ShareSchedule) -> None:
        """Live membership: this rank's place in a new generation (``schedule``'s rank and
        world); the step before's compute time is no longer comparable."""
        self.schedule, self.rank, self.world = schedule, schedule.rank, schedule.world
        self._timed = None

    def step_done(self, step: int, *, epoch: int, loss_sum: float | torch.Tensor,
                  units: float | torch.Tensor, clock: StepClock, lr: float | None = None,
                  grad_norm: float | None = None) -> list[list[float]]:
        """Step ``step`` finished on this rank (``loss_sum`` and ``units`` may be device
        tensors; ``clock`` timed its compute): gather, report, maybe rebalance (collective).
        Every rank's gathered row (with live membership its ``flags`` last)."""
        now = time.perf_counter()
        step_s, self._last_end = now - self._last_end, now
        self.step = step
        shares = self.schedule.split_at_quietly(step)
        reported = clock.tally_time(step, self._timed)  # a GPU's: the step before's, no wait
        flags = self.flags() if self.flags is not None else ()
        mine = self._packed([loss_sum, units, reported.seconds, float(reported.step), *flags])
        rows = PendingTallies(mine, self.world).rows()  # the step's one wait
        self._timed = clock.times(step)  # read after the wait: a GPU's events are complete
        report_step(self.events, rank=self.rank, step=step, epoch=epoch,
                    local_batch=shares[self.rank], compute_s=self._timed.seconds, step_s=step_s,
                    tallies=[LossTally(loss_sum=row[0], units=row[1]) for row in rows],
                    optimizer=OptimizerFacts(lr=lr, grad_norm=grad_norm))
        self._resources.poll(self.rank)
        if self.settings.policy != "static":
            # each rank's time with its share of the step it timed (none yet: ignored, NaN)
            timed = tuple(self.schedule.split_at_quietly(max(int(row[3]), 1))[rank]
                          for rank, row in enumerate(rows))
            self._rebalance(step, shares, [row[2] for row in rows], timed)
        return rows

    def _packed(self, values: list[float | torch.Tensor]) -> torch.Tensor:
        """``values`` as one float64 tensor on this rank's device, without a wait: its device
        tensors as they are, host numbers through fill kernels (a host copy would wait)."""
        parts = [value.detach().reshape(()).to(self.device, torch.float64)
                 if isinstance(value, torch.Tensor) and value.device.type == self.device.type
                 else torch.full((), float(value), dtype=torch.float64, device=self.device)
                 for value in values]
        return torch.stack(parts)

    def _rebalance(self, step: int, shares: tuple[int, ...], compute_s: list[float],
                   timed: tuple[int, ...]) -> None:
        """Rank 0 observes (every step: ``compute_s`` of each rank's share in ``timed``) and
        decides (every ``rebalance_every``); all apply."""
        scheduled = (self.schedule.decide(step, shares, compute_s, observed=timed)
                     if self.rank == 0 else None)
        if step % self.settings.rebalance_every:
            return
        first, split = ((scheduled.first_step, scheduled.decision.split) if scheduled
                        else (0, shares))
        agreed = (broadcast_ints([first, *split], self.device) if dist.is_initialized()
                  else (first, *split))
        if agreed[0] == 0:
            return
        new = tuple(agreed[1:])
        previous = self.schedule.split_at_quietly(agreed[0])
        self.schedule.apply(agreed[0], new)
        if scheduled is not None and new != previous:
            report_rebalance(self.events, scheduled.decision, step=agreed[0],
                             previous=previous, split=new, policy=self.settings.policy)

    def evaluated(self, step: int, metrics: dict[str, Any], samples: int, eval_s: float
                  ) -> None:
        """Rank 0: the script's evaluation after ``step`` (``eval_loss`` and friends)."""
        if self.rank != 0:
            return
        loss = metrics.get("eval_loss")
        perplexity = None
        if isinstance(loss, float | int):
            perplexity = float(torch.tensor(float(loss)).clamp(max=80).exp())
        self.events.emit(EvalEvent(t=time.time(), rank=0, step=step, samples=samples, units=0,
                                   loss=None if loss is None else float(loss),
                                   perplexity=perplexity, eval_s=eval_s))

    def saved(self, step: int, path: str) -> None:
        """Rank 0: the script saved a checkpoint of ``step`` at ``path``."""
        if self.rank == 0:
            self.events.emit(CheckpointEvent(t=time.time(), rank=0, step=step, path=path))

    def end(self, status: EndStatus, *, checkpoint: str | None = None,
            error: str | None = None) -> None:
        """The end event (once; later calls do nothing) and the file closed."""
        if self._ended:
            return
        self._ended = True
        self._resources.stop()
        self.events.emit(EndEvent(t=time.time(), rank=self.rank, step=self.step, status=status,
                                  checkpoint=checkpoint, error=error))
        self.events.close()
