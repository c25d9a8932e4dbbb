"""The trainer's settings: one frozen dataclass, ``TrainConfig``, and the ``python -m trainer``
flags generated from its fields (``trainer.settings.flags``).

``TrainConfig`` extends the settings it shares with cluster.toml's ``[run]``
(``trainer.settings.run_settings.RunSettings``) with the per-host and per-rank ones. Everything
that can be checked without the process group is checked in its ``__post_init__`` (each field's
choices and bounds from its type and metadata, then the combinations) or in ``check_world``
(needs only the world size torchrun exports), so a bad flag ends every rank with exit code 2
before any collective starts.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from profiles.user_errors import UsageError
from trainer.cpulist import parse_cpulist
from trainer.settings import flags, relations
from trainer.settings.flag_types import float_list, value_kind
from trainer.settings.run_settings import (
    BATCH,
    CHECKPOINTS,
    DEVICES,
    EXCHANGE,
    MEMORY,
    TASK,
    Device,
    Norm,
    Prefetch,
    RunSettings,
    setting,
)
from trainer.settings.syncbatch import check_syncbatch_flags

SLOWDOWN_ENV = "CORRAL_SLOWDOWN"
BUILTIN_TASKS = ("image", "causal_lm")
"""Task names the trainer knows; anything else is a user file ``FILE.py:FUNCTION``."""
TASK_PACKAGES = {"causal_lm": ("transformers>=5.0,<6", "peft>=0.17,<1")}
"""What a built-in task needs beyond corral's own dependencies (pyproject's ``llm`` extra)."""
QUANTISED_PACKAGES = ("bitsandbytes>=0.49,<1",)
"""What causal_lm's ``load_in_4bit`` / ``load_in_8bit`` need beyond ``TASK_PACKAGES``."""
QUANTISATION_OPTIONS = ("load_in_4bit", "load_in_8bit")


def requirement_name(requirement: str) -> str:
    """The package a requirement string names: ``"peft>=0.17,<1"`` -> ``"peft"`` (whatever
    follows the name: a version operator, extras or an environment marker)."""
    return re.split(r"[<>=!~\[;\s]", requirement.strip(), maxsplit=1)[0]


def task_packages(task: str, options: Mapping[str, object]) -> tuple[str, ...]:
    """The requirements a run of ``task`` with these task options needs on every host."""
    needed: tuple[str, ...] = TASK_PACKAGES.get(task, ())
    if task == "causal_lm" and any(options.get(o) is True for o in QUANTISATION_OPTIONS):
        needed += QUANTISED_PACKAGES
    return needed


def split_task_spec(spec: str) -> tuple[Path, str]:
    """``"path/to/file.py:build"`` -> (path, "build"); without ``:FUNCTION`` it is build."""
    path, sep, function = spec.rpartition(":")
    if not sep or not path.endswith(".py"):
        path, function = spec, "build"
    if not path.endswith(".py"):
        raise UsageError(f"--task {spec!r}: expected image, causal_lm or FILE.py:FUNCTION")
    if not function.isidentifier():
        raise UsageError(f"--task {spec!r}: {function!r} is not a Python function name")
    return Path(path), function


def _flag_of(name: str) -> str:
    return flags.flag_name(next(f for f in fields(TrainConfig) if f.name == name))


def _flag_text(name: str, value: object) -> str:
    return value_kind(flags.field_hints(TrainConfig)[name]).format(value)


FLAG_NAMING = relations.Naming(name=_flag_of, value=_flag_text, equals=" ")
"""How the trainer names a field in a relation's problem: as its flag (``--eval-every 11``)."""


def _relations_hold(values: dict[str, object], reading: str | None = None) -> None:
    """Raise the first relation (``trainer.settings.relations``) these values break, naming
    flags."""
    for subject, problem in relations.problems(values, FLAG_NAMING, reading):
        raise UsageError(f"{FLAG_NAMING.name(subject)} {problem}")


@dataclass(frozen=True, kw_only=True)
class SlowdownChange:
    """From step ``step`` (1-based) on, global rank ``rank`` behaves ``factor`` times slower."""

    step: int
    rank: int
    factor: float

    FORM = "STEP:RANK:FACTOR"
    """How ``--slowdown-at`` writes one change."""

    @classmethod
    def from_text(cls, text: str) -> SlowdownChange:
        """``"50:1:2"`` -> the change (``argparse.ArgumentTypeError`` for anything else)."""
        parts = text.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            return cls(step=int(parts[0]), rank=int(parts[1]), factor=float(parts[2]))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {cls.FORM} like 50:1:2; got {text!r}") from None

    def to_text(self) -> str:
        """The ``--slowdown-at`` text ``from_text`` reads back."""
        return f"{self.step}:{self.rank}:{self.factor!r}"


@dataclass(frozen=True, kw_only=True)
class TrainConfig(RunSettings):
    """One training run, as every rank sees it (all ranks get the same flags)."""

    task_options: tuple[tuple[str, str], ...] = field(
        default=(), metadata=setting(TASK, flag="--task-option"))
    """An option of the causal_lm or user task (repeatable); VALUE is JSON when it parses
    (16, 0.5, true), else text."""
    norm: Norm = field(default="auto", metadata=setting(TASK))
    """Normalisation layers: ``auto`` = group for simple_cnn, batch for the ResNets (batch
    uses per-rank statistics, see docs/trainer.md)."""
    rebalance_threshold: float = field(default=0.03, metadata=setting(BATCH))
    """Dynamic policy: move samples only when the predicted gain exceeds this fraction (plus
    the measured noise); in [0, 1)."""
    max_batch: tuple[int | None, ...] | None = field(default=None,
                                                     metadata=setting(BATCH, at_least=1))
    """Per-rank largest local batch (memory caps), ``-`` for no cap, e.g. 64,-."""
    capacity_passes: int = field(default=3, metadata=setting(BATCH, at_least=1))
    """Timed forward+backward passes per rank when capacities must be measured (no
    profile)."""
    run_dir: str = field(default="runs/local", metadata=setting(CHECKPOINTS, metavar="DIR"))
    """Where metrics/rank-<r>.jsonl and checkpoints/ are written on each host."""
    keep_checkpoints: int = field(default=3, metadata=setting(CHECKPOINTS, at_least=0))
    """Newest checkpoints kept on disk (0 = keep all)."""
    resume: bool = field(default=False, metadata=setting(CHECKPOINTS))
    """Continue from the newest complete checkpoint in ``run_dir`` on rank 0 (starts fresh
    when there is none)."""
    device: Device = field(default="auto", metadata=setting(DEVICES))
    """Device of each rank; ``auto`` = this rank's local GPU when present, else the CPU."""
    threads: int | None = field(default=None, metadata=setting(DEVICES, at_least=1))
    """CPU threads per rank (``torch.set_num_threads``); default: one per core of the rank's
    share (see ``pin_cores``)."""
    pin_cores: bool = field(default=True, metadata=setting(DEVICES))
    """Give this host's ranks disjoint cores (CUDA ranks: cores near their GPU); with more
    ranks than cores nothing is pinned. Off leaves placement to the kernel (see
    trainer/placement.py)."""
    prefetch: Prefetch = field(default="auto", metadata=setting(DEVICES))
    """Prepare the next step's batch while this one computes (pinned memory and an
    asynchronous copy on CUDA); ``auto`` = on CUDA ranks only (on a CPU rank the worker
    competes with the step for its cores)."""
    cores: str | None = field(default=None, metadata=setting(DEVICES, metavar="LIST"))
    """The cores to share out between this host's ranks, as a cpulist like 0-7,16 (default:
    every core this process may use)."""
    slowdown: tuple[float, ...] = field(default=(1.0,), metadata=setting(DEVICES))
    """EMULATION: behave this many times slower (sleep (s-1) x compute each step). One value
    for every rank of this command, or one per global rank; the environment variable
    CORRAL_SLOWDOWN is used when the flag is absent."""
    slowdown_at: tuple[SlowdownChange, ...] = field(default=(), metadata=setting(DEVICES))
    """From step STEP on, rank RANK uses slowdown FACTOR (repeatable)."""
    resources_every: float = field(default=2.0, metadata=setting(DEVICES, at_least=0))
    """Seconds between ``resources`` events (0 = none)."""
    micro_batch: tuple[int | None, ...] | None = field(
        default=None, metadata=setting(MEMORY, at_least=1, metavar="N|n0,n1,..."))
    """Largest forward/backward pass per rank: a larger share runs as several passes with
    gradient accumulation (one all-reduce per step). One value for every rank or one per rank
    (``-`` = no limit); a stored profile's memory cap lowers it further."""
    state_budget: tuple[float, ...] | None = field(default=None,
                                                   metadata=setting(MEMORY, above=0,
                                                                    metavar="GIB,GIB,..."))
    """``shard_state``: the memory budget for training state in GiB, one for every rank of
    this command (a host's) or one per rank, instead of the measured free memory; only the
    ranks' ratio sizes their slices."""

    link_mbit: float | None = field(default=None, metadata=setting(EXCHANGE, at_least=0))
    """This host's link in Mbit/s as corral's pre-flight check measured it (``corral run``
    passes it): the dynamic policy predicts an active set's exchange from its slowest link.
    Not given (or 0): not known, and every link counts as equal."""
    islands: tuple[int, ...] | None = field(default=None, metadata=setting(EXCHANGE, at_least=0))
    """``--exchange local``: the island of each rank, one entry per rank (e.g. 0,0,1: ranks 0
    and 1 are one exactly data-parallel worker, rank 2 another). Not set: the ranks of one
    torchrun node (one host) are one island."""
    island_schedule: str | None = field(default=None, metadata=setting(EXCHANGE,
                                                                       metavar="STEP:ISLANDS;.."))
    """``--exchange local``: the islands that train in each round, from a step on (e.g.
    ``0:0,1;16:0,1,2;40:0,~1,2``; ``~``: trained but left out of the round's average): the
    deterministic replay of a live run's joins and leaves (trainer/lowcomm/schedule.py)."""

    def __post_init__(self) -> None:
        if self.task not in BUILTIN_TASKS:
            split_task_spec(self.task)
        flags.check_fields(self)  # each field's choices and bounds
        self._check_combinations()

    def _check_combinations(self) -> None:
        """The relations between fields (``trainer.settings.relations``, shared with cluster.toml's
        ``[run]``), then the checks that need more than a bound."""
        _relations_hold({f.name: getattr(self, f.name) for f in fields(self)})
        check_syncbatch_flags(self.norm, self.micro_batch, self.split, self.policy)
        if self.cores is not None:
            try:
                parse_cpulist(self.cores)
            except ValueError as exc:
                raise UsageError(f"--cores {self.cores!r}: {exc}; write a list like 0-3,8")\
                    from None
        if any(not s >= 1.0 for s in self.slowdown):
            raise UsageError(f"--slowdown factors must be >= 1, got {_csv(self.slowdown)}")
        for change in self.slowdown_at:
            if change.step < 1 or change.rank < 0 or not change.factor >= 1.0:
                raise UsageError(f"--slowdown-at {change.to_text()}: need STEP >= 1, "
                                 "RANK >= 0 and FACTOR >= 1")
        if not 0 <= self.rebalance_threshold < 1:
            raise UsageError("--rebalance-threshold must be in [0, 1)")

    @property
    def resolved_norm(self) -> Literal["batch", "syncbatch", "group"]:
        """The normalisation actually used (``auto`` resolved per model)."""
        if self.norm != "auto":
            return self.norm
        return "group" if self.model == "simple_cnn" else "batch"

    def slowdown_for(self, rank: int) -> float:
        """The initial slowdown factor of global rank ``rank`` (check_world checked the length)."""
        if len(self.slowdown) == 1:
            return self.slowdown[0]
        return self.slowdown[rank]


def check_world(config: TrainConfig, world_size: int) -> None:
    """Checks that need the world size (known from torchrun's environment before any collective)."""
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    _relations_hold({**values, relations.WORLD: world_size}, reading=relations.WORLD)
    if len(config.slowdown) not in (1, world_size):
        raise UsageError(
            f"--slowdown {_csv(config.slowdown)} has {len(config.slowdown)} factors: give one "
            f"(for every rank) or {world_size} (one per rank)"
        )
    for change in config.slowdown_at:
        if change.rank >= world_size:
            raise UsageError(
                f"--slowdown-at names rank {change.rank}, but ranks are 0..{world_size - 1}"
            )
    if config.max_batch is not None:
        if len(config.max_batch) != world_size:
            raise UsageError(
                f"--max-batch has {len(config.max_batch)} entries for {world_size} ranks"
            )
        caps = [m if m is not None else config.global_batch for m in config.max_batch]
        if sum(caps) < config.global_batch:
            raise UsageError(
                f"--max-batch caps sum to {sum(caps)}, below --global-batch {config.global_batch}"
            )
    if config.split is not None and config.max_batch is not None:
        for rank, (share, cap) in enumerate(zip(config.split, config.max_batch, strict=True)):
            if cap is not None and share > cap:
                raise UsageError(f"--split {_csv(config.split)}: rank {rank}'s share {share} "
                                 f"exceeds its --max-batch {cap}")
    if config.state_budget is not None and len(config.state_budget) not in (1, world_size):
        raise UsageError(f"--state-budget {_csv(config.state_budget)} has "
                         f"{len(config.state_budget)} entries: give one (for every rank) or "
                         f"{world_size} (one per rank)")
    if config.islands is not None and len(config.islands) != world_size:
        raise UsageError(f"--islands {_csv(config.islands)} has {len(config.islands)} entries "
                         f"for {world_size} ranks: give one per rank")
    if config.micro_batch is not None and len(config.micro_batch) not in (1, world_size):
        raise UsageError(f"--micro-batch {_csv(config.micro_batch)} has "
                         f"{len(config.micro_batch)} entries: give one (for every rank) or "
                         f"{world_size} (one per rank)")


def _csv(values: Sequence[object]) -> str:
    return ",".join(str(v) for v in values)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m trainer`` argument parser: one flag per ``TrainConfig`` field."""
    return flags.build_parser(
        TrainConfig, prog="python -m trainer",
        description="corral's trainer: exact data-parallel training over unequal ranks. Start "
        "it with torch's launcher: python -m torch.distributed.run --nproc-per-node N -m "
        "trainer ...")


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse flags into a TrainConfig; argparse errors exit 2, bad values raise UsageError."""
    parser = build_parser()
    parser.set_defaults(slowdown=None)  # absent: the environment's, else the field's default
    args = parser.parse_args(argv)
    values = flags.parsed_values(TrainConfig, args)
    if args.slowdown is None:
        env = os.environ.get(SLOWDOWN_ENV, "").strip()
        try:
            values["slowdown"] = float_list(env) if env else TrainConfig.slowdown
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"{SLOWDOWN_ENV}: {exc}") from None
    return TrainConfig(**values)
