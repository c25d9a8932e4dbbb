"""The events of a script without corral's opt-in, written by ``script_main`` for every rank:
a start at its first optimizer step, a step event per optimizer step, an end when it returns.

torch's global optimizer-step hooks see every optimizer of the process, so a plain script's
steps are counted and timed with no line of it changed; the samples of a step are the first
dimension of what the script's model was called on (summed over the forward passes with
gradients between two steps: accumulation counts every micro-batch). The model is the outermost
module of the first forward with gradients: a ``DistributedDataParallel`` or FSDP module (FSDP1's
wrapper, FSDP2's ``fully_shard`` root) or a bare module alike, found by global module hooks that
are removed once it is known. The first call is counted
after its forward, where a call with keyword arguments alone (``model(**batch)``, as HF's
``Trainer`` makes it) shows them: a global pre-hook sees positional arguments only. The first
step's time runs from the first forward with gradients, not from the rank's start: the
script's imports, data and model loading are no step's. The loss is the script's own
and is not read (reading it would wait for the device): a plain script's step events carry
``loss`` None.

Each step event is what corral's loop writes, so the console's progress and per-rank rates,
``corral report``, TensorBoard and MLflow read a plain script's run unchanged. The hooks do
no device synchronisation and no file write of their own: step events are buffered and
written together at most every ``FLUSH_EVERY_S`` (the first at once), and at once when the
rank is stopped: a TERM (``corral stop``, ``x``: torchrun passes it on to every rank) writes
what is pending and an ``interrupted`` end, then ends the rank of that signal as it would have
ended without corral, so the report's step count is exact; a TERM that comes once the script
has ended (in its exit handlers: torchrun stops the rest of a group when one rank failed
first) writes the script's own end, so a rank that failed says so whichever rank exits first.
A script that sets its own TERM handler keeps it: the pending steps are written before it runs
(its rank ends later through its own exit, which writes the end). A rank with an emulated
slowdown (``[run] slowdown``) sleeps before each optimizer step as ``trainer.step.slowdown``
does in corral's loop: its work since the last step, scaled by the factor. Its resources
(CPU, memory, GPU) are sampled as corral's own ranks' are (``trainer.resources``), polled after
each step without waiting.

Pending step events are also written by a timer ``FLUSH_EVERY_S`` after a step: a rank that
blocks after its steps (a collective no peer joins) has written every step it took, so the hang
watch and the report count them. The end event needs no process group: a script that left its
group (``destroy_process_group()``) before any step still ends as it did. A script that starts
processes of its own (``torch.multiprocessing.spawn``) trains in them, out of these hooks' sight:
a rank that took no step itself says so, once, naming how many it started.

A script with the opt-in (``ScriptRun``) writes its own events, and these write nothing.
"""

from __future__ import annotations

import multiprocessing.process
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.nn.parallel import DistributedDataParallel
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from trainer.dist import device_name, on_any_rank
from trainer.event_log import EventWriter, events_path
from trainer.events import EndEvent, EndStatus, StartEvent, StepEvent
from trainer.integrations.contract import ScriptSettings
from trainer.integrations.rank_setup import precision_note
from trainer.integrations.run import ScriptRun
from trainer.resources import ResourceReporter
from trainer.settings.train_config import TrainConfig
from trainer.step.slowdown import WorkTimer, emulate_slowdown, emulates

FLUSH_EVERY_S = 1.0
"""Buffered step events are written at most this often (and at the end)."""


@dataclass(frozen=True)
class ScriptEnding:
    """How a script ended, known before its rank's exit handlers run."""

    error: str | None
    """Its failure (the exception, the exit status), None when it completed."""


def joiner_term() -> None:
    """A live joiner's TERM handler (``corral stop``): it writes no plain events
    (``script_main``), so the opt-in's ``interrupted`` end is written here once it has one,
    then the rank ends of the signal as Python's default would."""

    def term(signum: int, frame: FrameType | None) -> None:
        if ScriptRun.newest is not None:
            ScriptRun.newest.end("interrupted", error=f"stopped by {signal.Signals(signum).name}")
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)  # not reached unless the signal is blocked

    signal.signal(signal.SIGTERM, term)


class PlainEvents:
    """One rank's events, unless the script took corral's opt-in (create it before the
    script runs: every hook and import is in place then)."""

    def __init__(self, settings: ScriptSettings, device: torch.device, script: str) -> None:
        self.settings, self.device, self.script = settings, device, script
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.backend = str(dist.get_backend())
        """The group's backend, kept: the script may leave its group before the start event."""
        self.steps = 0
        self.factor = settings.slowdown_of(self.rank)
        # every rank asks at the same point (one collective), before the script runs
        self.emulated = on_any_rank(emulates(settings.slowdown), device)
        self._writer: EventWriter | None = None
        self._resources: ResourceReporter | None = None
        """The rank's resource samples (from its first step), as corral's own ranks have."""
        self._pending: list[tuple[float, int, int, float, float]] = []
        """Steps not written yet: (time, step, samples, compute_s, step_s)."""
        self._flushed = 0.0
        self._samples = 0
        self._work = WorkTimer(cpu=device.type == "cpu")
        self._last_end = time.perf_counter()
        self._compute_s = 0.0
        self._model: Any = None
        """The outermost module of the first forward with gradients: the script's model."""
        self._model_hook: Any = None
        self._lock = threading.RLock()
        """Held while pending steps change or are written (the main thread and the timer)."""
        self._timer: threading.Timer | None = None
        self.spawned = 0
        """Processes the script started itself (its DataLoader workers included)."""
        _count_spawned(self)
        self._busy = False
        """A hook is writing: a TERM arriving then is handled when it is done."""
        self._deferred: int | None = None
        """The signal that arrived while ``_busy``."""
        self._outcome: ScriptEnding | None = None
        """How the script ended, once it has (its rank's exit handlers run after that)."""
        self._ended = False
        self._on_term = self._term  # one bound method, to know it again in getsignal
        self._theirs: Any = signal.signal(signal.SIGTERM, self._on_term)
        """The TERM handler before ours, or the script's own once it sets one."""
        self._hooks = [register_optimizer_step_pre_hook(self._step_begins),
                       register_optimizer_step_post_hook(self._stepped),
                       register_module_forward_pre_hook(self._any_forward),
                       register_module_forward_hook(self._any_forwarded, with_kwargs=True)]
        self._work.start()

    # ---------------------------------------------------------------- the hooks
    def _any_forward(self, module: Any, args: Any) -> None:
        """Every module's forward until the first with gradients, where the first step's
        clock starts (the script's start-up is no step's; an evaluation before training, under
        ``no_grad``, neither). Pre-hooks run outermost first: this module is the model (a DDP
        or FSDP wrapper, or the bare module)."""
        if torch.is_grad_enabled():
            self._last_end = time.perf_counter()
            self._work.start()
            self._model = module
            self._hooks[2].remove()

    def _any_forwarded(self, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        """After every module's forward until the model's: watch that one alone, and count
        this first call (its keyword arguments are seen here, not before). A DDP module met
        first is the model even so (it is the outermost wherever it is used)."""
        if isinstance(module, DistributedDataParallel) or (
                module is self._model and self._model is not None):
            self._model_hook = module.register_forward_pre_hook(self._model_forward,
                                                                with_kwargs=True)
            self._hooks[3].remove()
            self._model_forward(module, args, kwargs)

    def _model_forward(self, module: Any, args: Any, kwargs: Any) -> None:
        """The model is called on a batch: count its samples (training passes only)."""
        if not torch.is_grad_enabled():
            return
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                self._samples += int(value.shape[0])
                return

    def _step_begins(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """Before an optimizer step: this rank's compute since the last one, slowed down."""
        wall, own = self._work.read()
        if self.emulated and not ScriptRun.made:  # the opt-in emulates it itself
            self._compute_s = emulate_slowdown(self.factor, own, wall)
        else:
            self._compute_s = wall

    def _stepped(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """After an optimizer step: one step event (buffered)."""
        if ScriptRun.made:  # the opt-in writes its own; a TERM still writes its end (``end``)
            self._remove_hooks(keep_term=True)
            return
        if self._model is None and _inert(optimizer):
            return  # a resume's optimizer-state set-up (torch DCP's step at lr 0): no step
        self._busy = True
        try:
            self._record()
        finally:
            self._busy = False
        if self._deferred is not None:
            self._term(self._deferred, None)
        self._work.start()

    def _record(self) -> None:
        now = time.perf_counter()
        self.steps += 1
        if self.steps == 1:
            for finder in self._hooks[2:]:  # no forward with gradients before the first step
                finder.remove()
            self._start()
        with self._lock:
            # the event is built at the flush: a tuple here is a fraction of its cost
            self._pending.append((time.time(), self.steps, self._samples, self._compute_s,
                                  now - self._last_end))
            if self.steps == 1 or now - self._flushed >= FLUSH_EVERY_S:
                self._flush(now)
            elif self._timer is None:  # written soon even if the rank blocks from here on
                self._timer = threading.Timer(FLUSH_EVERY_S, self._flush_later)
                self._timer.daemon = True
                self._timer.start()
        self._samples, self._last_end = 0, now
        if self._resources is not None:
            self._resources.poll()  # never blocks: a sample only when the sampler has one
        theirs = signal.getsignal(signal.SIGTERM)
        if theirs is not self._on_term and threading.current_thread() is threading.main_thread():
            self._theirs = theirs  # the script set its own: ours runs first, then calls it
            signal.signal(signal.SIGTERM, self._on_term)

    def _term(self, signum: int, frame: FrameType | None) -> None:
        """TERM: write the pending steps; then the script's own handler, or (none) an
        ``interrupted`` end and the rank ends of the signal as Python's default would."""
        if self._busy:  # inside a hook's write: finish it first
            self._deferred = signum
            return
        self._deferred = None
        if self._outcome is not None:  # the script had ended: that is the rank's end
            self.end(self._outcome.error)
        if callable(self._theirs):
            self._flush(time.perf_counter())
            self._theirs(signum, frame)
            return
        if self._theirs == signal.SIG_IGN:
            return
        self.end(f"stopped by {signal.Signals(signum).name}", status="interrupted")
        os.kill(os.getpid(), signum)  # our handler is gone (end): the default ends the rank
        os._exit(128 + signum)  # not reached unless the signal is blocked

    # ---------------------------------------------------------------- writing
    def _flush(self, now: float) -> None:
        with self._lock:
            if self._writer is not None and self._pending:
                self._writer.emit_all([
                    StepEvent(t=t, rank=self.rank, step=step, epoch=0, local_batch=samples,
                              loss=None, compute_s=compute_s, step_s=step_s)
                    for t, step, samples, compute_s, step_s in self._pending])
            self._pending, self._flushed = [], now

    def _flush_later(self) -> None:
        """The timer's flush: the steps pending since the last write."""
        with self._lock:
            self._timer = None
            self._flush(time.perf_counter())

    def _remove_hooks(self, *, keep_term: bool = False) -> None:
        """The hooks removed; the TERM handler too unless ``keep_term`` (the opt-in took over
        the events, but its end is written at exit, which a TERM's default action skips)."""
        if self._timer is not None:
            self._timer.cancel()
        for hook in (*self._hooks, self._model_hook):
            if hook is not None:
                hook.remove()
        if (not keep_term and signal.getsignal(signal.SIGTERM) is self._on_term
                and threading.current_thread() is threading.main_thread()):
            signal.signal(signal.SIGTERM, self._theirs)
        if self._resources is not None:
            self._resources.stop()

    def _start(self) -> None:
        self._writer = EventWriter(events_path(self.settings.run_dir, self.rank))
        self._resources = ResourceReporter(str(self.device), TrainConfig.resources_every,
                                           self.rank, self._writer)
        note = precision_note()
        self._writer.emit(StartEvent(
            t=time.time(), rank=self.rank, world_size=self.world,
            local_rank=int(os.environ.get("LOCAL_RANK", "0")), host=socket.gethostname(),
            pid=os.getpid(), device=str(self.device), device_name=device_name(self.device),
            backend=self.backend, model=os.path.basename(self.script), dataset="",
            global_batch=0, split=(), policy="", step=0, total_steps=0, steps_per_epoch=0,
            threads=torch.get_num_threads(), slowdown=self.factor,
            task="script", exact=False,
            exact_note="the script runs as is: its own data and loss" + (
                f"; {note}" if note else "")))

    def ending(self, error: str | None) -> None:
        """The script has ended, completed (``error`` None) or failed with ``error``; its
        exit handlers run before ``end`` writes it. A TERM in between (its launcher stops it
        because a peer rank that failed as it did exited first) writes this end, not an
        ``interrupted`` one: the rank's own failure is not lost to whichever exits first."""
        self._outcome = ScriptEnding(error)

    def end(self, error: str | None, status: EndStatus = "failed") -> None:
        """The end event, written once: completed (``error`` None), else ``status`` with
        ``error``."""
        if self._ended:
            return
        self._ended = True
        self._remove_hooks()
        if ScriptRun.made:  # the opt-in writes its own end, at exit: a TERM skips that
            if status == "interrupted" and ScriptRun.newest is not None:
                ScriptRun.newest.end("interrupted", error=error)
            return
        if self.steps == 0 and self.spawned:
            print(f"corral: rank {self.rank} took no optimizer step itself; the script started "
                  f"{self.spawned} process(es) of its own (torch.multiprocessing): steps taken "
                  "there are not seen, so their count, samples and rates are unknown",
                  file=sys.stderr, flush=True)
        if self._writer is None:
            self._start()
        assert self._writer is not None
        self._flush(time.perf_counter())
        self._writer.emit(EndEvent(t=time.time(), rank=self.rank, step=self.steps,
                                   status="completed" if error is None else status,
                                   error=error))
        self._writer.close()


def _inert(optimizer: Any) -> bool:
    """Whether a step of ``optimizer`` changes nothing: every group's ``lr`` is 0, as torch's
    distributed checkpoint sets it to initialise the optimizer's state before loading it
    (``set_optimizer_state_dict``), with zero gradients, before the script's first forward."""
    rates = [group["lr"] for group in getattr(optimizer, "param_groups", ()) if "lr" in group]
    return bool(rates) and all(float(rate) == 0.0 for rate in rates)


def _count_spawned(events: PlainEvents) -> None:
    """Count the processes this rank's script starts (``multiprocessing``, which
    ``torch.multiprocessing.spawn`` uses) in ``events.spawned``."""
    original = multiprocessing.process.BaseProcess.start

    def start_counted(process: multiprocessing.process.BaseProcess) -> None:
        events.spawned += 1
        original(process)

    setattr(multiprocessing.process.BaseProcess, "start", start_counted)  # noqa: B010
