"""A script's rank set up as corral's own ranks are, before the script's first line runs.

``script_main`` calls ``join`` on every rank torchrun starts:

- the rank is numbered in cluster.toml's host order (``trainer.dist.rank_info``: ``RANK`` becomes
  ``CORRAL_RANK_BASE + LOCAL_RANK``, first host's ranks first, rank 0 on the master), whatever
  torch's rendezvous order; torch's process group takes any numbering of its members;
- the process group is made with the backend corral chose for the whole cluster
  (``CORRAL_BACKEND``). A script's own ``init_process_group`` then keeps that group (it would
  otherwise raise "initialize the default process group twice"), and accelerate, which makes a
  group only when none exists, uses it: a GPU rank cannot pick nccl while a CPU rank picks gloo
  and wait for it for ever. The script's own ``timeout`` is the group's, as under torchrun
  (``init_process_group(timeout=...)``, accelerate's ``InitProcessGroupKwargs``): a fail-fast
  timeout fails fast; one longer than ``[run] hang_limit`` is said once, with that setting,
  before training (corral's watch would stop a silent rank before it);
- the rank's device: a CUDA rank's current device is its local GPU; a CPU rank sets
  ``ACCELERATE_USE_CPU`` (what the Hugging Face stack reads for ``use_cpu``);
- a precision the rank can do: a script's ``TrainingArguments`` (TRL's configs are subclasses)
  asking bf16 or fp16 on a rank that cannot do it computes in what corral's ``auto`` precision
  gives there (``run_settings.auto_precision``: fp32 on the CPU, fp16 on a GPU without bf16), said
  once per host, instead of failing in ``TrainingArguments.__post_init__``. The patch waits for
  the script to import transformers (an import hook): a plain script never loads it.
"""

from __future__ import annotations

import datetime
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import torch
import torch.distributed as dist

from trainer.dist import choose_backend, choose_device, init_process_group, rank_info
from trainer.integrations.contract import ScriptSettings
from trainer.settings.run_settings import auto_precision

TRAINING_ARGS_MODULE = "transformers.training_args"
_notes: list[str] = []
"""What corral changed about the script's precision on this rank (the start event says it)."""
_said: set[str] = set()
"""The topics of the lines already printed (each is said once)."""


def join(settings: ScriptSettings) -> torch.device:
    """Number this rank, give it its device, make the cluster's group (under torchrun);
    the rank's device."""
    info = rank_info()
    device = rank_device(settings.device, info.local_rank)
    backend = settings.backend or choose_backend("auto", device)
    init_process_group(backend, device, info)
    _keep_the_group(settings.hang_limit)
    after_import(TRAINING_ARGS_MODULE, lambda module: fit_precision(module, device))
    return device


def rank_device(wanted: str, local_rank: int) -> torch.device:
    """``cpu`` or ``cuda:<local GPU>`` as the launch says (what torch finds when it does not)."""
    device = choose_device("cpu" if wanted == "cpu" else "auto", local_rank)
    if device.type == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"
    else:
        torch.cuda.set_device(device)
    return device


def precision_note() -> str:
    """What corral changed about the script's precision on this rank ('' when nothing)."""
    return "; ".join(_notes)


def _keep_the_group(hang_limit: float) -> None:
    """Make the script's ``init_process_group`` keep the group corral made, with the
    script's timeout."""
    original = dist.init_process_group

    def init_process_group_kept(backend: Any = None, *args: Any, **kwargs: Any) -> None:
        if not dist.is_initialized():  # the script left corral's group and makes its own
            original(backend, *args, **kwargs)
            return
        timeout = kwargs.get("timeout", args[1] if len(args) > 1 else None)
        if isinstance(timeout, datetime.timedelta):
            take_timeout(timeout, hang_limit)
        asked = kwargs.get("backend", backend)
        made = dist.get_backend()
        if asked and str(asked) != made and "backend" not in _said:
            _say("backend", f"corral: the script's init_process_group({asked!r}) keeps the "
                            f"cluster's {made} process group (every rank must use the same)")

    setattr(dist, "init_process_group", init_process_group_kept)  # noqa: B010
    setattr(dist.distributed_c10d, "init_process_group", init_process_group_kept)  # noqa: B010


def take_timeout(timeout: datetime.timedelta, hang_limit: float) -> None:
    """The group's collectives time out after ``timeout``, as the script asked; one line when
    ``[run] hang_limit`` (seconds, 0 for none) would stop a silent rank before it."""
    try:
        dist.distributed_c10d._set_pg_timeout(timeout)
    except (AttributeError, RuntimeError, ValueError) as error:  # an older torch, a backend
        _say("timeout", f"corral: the script's process-group timeout {timeout} could not be "
                        f"set ({error}); the group keeps its own")
        return
    seconds = timeout.total_seconds()
    if hang_limit and seconds > hang_limit and "timeout" not in _said:
        _say("timeout", f"corral: the script's process-group timeout ({seconds:g} s) is longer "
                        f"than [run] hang_limit ({hang_limit:g} s): a rank that makes no step "
                        f"for {hang_limit:g} s while another waits for it stops the run first; "
                        f"raise [run] hang_limit to at least {seconds:g} to wait as the script "
                        "asks")


def _say(topic: str, line: str) -> None:
    """One line on the console per host (the host's local rank 0 prints it)."""
    _said.add(topic)
    if os.environ.get("LOCAL_RANK", "0") == "0":
        print(line, file=sys.stderr, flush=True)


def fitted_precision(asked: str, device: torch.device) -> str:
    """The precision this rank computes in when the script asks ``asked``: itself when the
    device can do it, else corral's ``auto`` choice for the device."""
    if asked == "fp32":
        return asked
    bf16_capable = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if device.type == "cuda" and (asked == "fp16" or bf16_capable):
        return asked
    return auto_precision(device.type, bf16_capable)


def fit_precision(module: ModuleType, device: torch.device) -> None:
    """Wrap ``TrainingArguments.__post_init__`` so that its precision fits ``device``."""
    cls = module.TrainingArguments
    original = cls.__post_init__

    def post_init_fitted(args: Any) -> None:
        _fit_arguments(args, device)
        original(args)

    cls.__post_init__ = post_init_fitted


def _fit_arguments(args: Any, device: torch.device) -> None:
    if device.type == "cpu":
        args.use_cpu = True
    asked = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    given = fitted_precision(asked, device)
    if given == asked:
        return
    args.bf16, args.fp16 = given == "bf16", given == "fp16"
    if given != "bf16":
        args.bf16_full_eval = False
    where = "the CPU" if device.type == "cpu" else torch.cuda.get_device_name(device)
    note = f"the script's {asked} runs as {given} on {where} (it cannot do {asked})"
    if note not in _notes:
        _notes.append(note)
        _say(note, f"corral: {os.environ.get('CORRAL_HOST', 'this host')}: {note}")


def after_import(name: str, then: Callable[[ModuleType], None]) -> None:
    """Call ``then(module)`` once module ``name`` has been imported (now, if it already is)."""
    if name in sys.modules:
        then(sys.modules[name])
        return
    sys.meta_path.insert(0, _AfterImport(name, then))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real loader of one module to run a hook after it."""

    def __init__(self, name: str, then: Callable[[ModuleType], None]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        loader = spec.loader if spec is not None else None
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_module = loader.exec_module

        def exec_then_hook(module: ModuleType) -> None:
            run_module(module)
            self.then(module)

        setattr(loader, "exec_module", exec_then_hook)  # noqa: B010
        return spec
