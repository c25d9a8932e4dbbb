"""The events of a script without corral's opt-in: a start at its first optimizer step and an
end when it returns, written by ``script_main`` for every rank.

They tell the console, ``corral report`` and the run's outcome what corral knows of such a run
(hosts, ranks, devices, backend, time, outcome, optimizer steps) and let a run whose every rank
finished be recorded as completed whatever its launchers say afterwards. A script with the
opt-in (``ScriptRun``) writes its own, and these write nothing.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import torch
import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_post_hook

from trainer.dist import device_name
from trainer.events import EndEvent, EventWriter, StartEvent, events_path
from trainer.integrations.contract import ScriptSettings
from trainer.integrations.rank_setup import precision_note
from trainer.integrations.run import ScriptRun


class PlainEvents:
    """One rank's start and end events, unless the script took corral's opt-in."""

    def __init__(self, settings: ScriptSettings, device: torch.device, script: str) -> None:
        self.settings, self.device, self.script = settings, device, script
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.steps = 0
        self._writer: EventWriter | None = None
        self._hook = register_optimizer_step_post_hook(self._stepped)

    def _stepped(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.steps += 1
        if self._writer is None and not ScriptRun.made:
            self._start()

    def _start(self) -> None:
        self._writer = EventWriter(events_path(self.settings.run_dir, self.rank))
        note = precision_note()
        self._writer.emit(StartEvent(
            t=time.time(), rank=self.rank, world_size=self.world,
            local_rank=int(os.environ.get("LOCAL_RANK", "0")), host=socket.gethostname(),
            pid=os.getpid(), device=str(self.device), device_name=device_name(self.device),
            backend=dist.get_backend(), model=os.path.basename(self.script), dataset="",
            global_batch=0, split=(), policy="", step=0, total_steps=0, steps_per_epoch=0,
            threads=torch.get_num_threads(), slowdown=self.settings.slowdown_of(self.rank),
            task="script", exact=False,
            exact_note="the script runs as is: its own data and loss" + (
                f"; {note}" if note else "")))

    def end(self, error: str | None) -> None:
        """The end event: completed (``error`` None) or failed with ``error``."""
        self._hook.remove()
        if ScriptRun.made:
            return
        if self._writer is None:
            self._start()
        assert self._writer is not None
        self._writer.emit(EndEvent(t=time.time(), rank=self.rank, step=self.steps,
                                   status="completed" if error is None else "failed",
                                   error=error))
        self._writer.close()
