"""The trainer's settings: one frozen dataclass and the ``python -m trainer`` flags that fill it.

Everything that can be checked without the process group is checked here (``TrainConfig``'s
``__post_init__``) or in ``check_world`` (needs only the world size torchrun exports), so a bad
flag ends every rank with exit code 2 before any collective starts.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from profiles.errors import UsageError
from trainer.config_training import (
    TRAINING_FIELDS,
    add_training_flags,
    check_training,
    check_training_world,
)
from trainer.flag_types import cap_list, float_list, int_list, slowdown_change, task_option
from trainer.placement import parse_cpulist

MODELS = ("simple_cnn", "resnet18", "resnet50")
DATASETS = ("synthetic_image", "cifar10", "cifar100")
POLICIES = ("static", "proportional", "dynamic")
NORMS = ("auto", "batch", "syncbatch", "group")
SLOWDOWN_ENV = "CORRAL_SLOWDOWN"
BUILTIN_TASKS = ("image", "causal_lm")
"""Task names the trainer knows; anything else is a user file ``FILE.py:FUNCTION``."""
TASK_PACKAGES = {"causal_lm": ("transformers>=5.0,<6", "peft>=0.17,<1")}
"""What a built-in task needs beyond corral's own dependencies (pyproject's ``llm`` extra)."""


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


@dataclass(frozen=True, kw_only=True)
class SlowdownChange:
    """From step ``step`` (1-based) on, global rank ``rank`` behaves ``factor`` times slower."""

    step: int
    rank: int
    factor: float


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run, as every rank sees it (all ranks get the same flags)."""

    task: str = "image"
    """What to train: ``image``, ``causal_lm`` or a user file ``FILE.py:FUNCTION``."""
    task_options: tuple[tuple[str, str], ...] = ()
    """``--task-option KEY=VALUE`` pairs for causal_lm and user tasks (values parsed as JSON
    when they parse, else kept as text)."""
    model: Literal["simple_cnn", "resnet18", "resnet50"] = "simple_cnn"
    """Network to train."""
    dataset: Literal["synthetic_image", "cifar10", "cifar100"] = "synthetic_image"
    """Training data."""
    data_dir: str | None = None
    """Directory holding the CIFAR python-pickle batches (cifar10/cifar100 only)."""
    samples: int = 4096
    """Number of images in the synthetic dataset."""
    global_batch: int = 64
    """B: samples per optimizer step over all ranks together."""
    split: tuple[int, ...] | None = None
    """Initial per-rank local batches (sum B, one per rank); None = equal split."""
    policy: Literal["static", "proportional", "dynamic"] = "static"
    """How the split is chosen and changed."""
    rebalance_every: int = 10
    """Steps between rebalancing decisions (dynamic policy)."""
    rebalance_threshold: float = 0.03
    """Dynamic policy: change the split only when the predicted gain exceeds this fraction."""
    max_batch: tuple[int | None, ...] | None = None
    """Per-rank largest local batch (memory caps); None entries = no cap."""
    capacity_passes: int = 3
    """Timed forward+backward passes per rank when capacities must be measured."""
    steps: int | None = None
    """The run's total number of optimizer steps (a resumed run continues up to it)."""
    epochs: int | None = None
    """The run's total number of epochs, when ``steps`` is not given (default 1)."""
    lr: float = 0.05
    """Learning rate."""
    optimizer: Literal["sgd", "adamw"] = "sgd"
    """Optimizer: SGD with momentum 0.9, or AdamW."""
    weight_decay: float = 0.0
    """Weight decay for the optimizer."""
    norm: Literal["auto", "batch", "syncbatch", "group"] = "auto"
    """Normalisation layers: ``auto`` = group for simple_cnn, batch for the ResNets."""
    seed: int = 0
    """Seed for the weights, the synthetic data and the per-epoch sample order."""
    run_dir: str = "runs/local"
    """Where metrics/ and checkpoints/ go on each host."""
    checkpoint_every: int = 0
    """Rank 0 writes a checkpoint every this many steps (0 = only at the end)."""
    keep_checkpoints: int = 3
    """Newest checkpoints kept on disk (0 = keep all)."""
    resume: bool = False
    """Continue from the newest complete checkpoint in ``run_dir`` (fresh start if none)."""
    slowdown: tuple[float, ...] = (1.0,)
    """Emulated slowdown: one factor for every rank started by this command, or one per rank."""
    slowdown_at: tuple[SlowdownChange, ...] = ()
    """Scheduled slowdown changes (``--slowdown-at STEP:RANK:FACTOR``)."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """Process-group backend; ``auto`` = nccl when this host has CUDA, else gloo."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device of each rank; ``auto`` = the local GPU when present, else the CPU."""
    threads: int | None = None
    """CPU threads per rank (``torch.set_num_threads``); None = one per core of the rank's
    share (see ``pin_cores``)."""
    pin_cores: bool = True
    """Give the ranks of this host disjoint cores (CUDA ranks: cores near their GPU); off
    leaves placement to the kernel. See trainer/placement.py."""
    prefetch: Literal["auto", "on", "off"] = "auto"
    """Prepare the next step's batch while the current one computes; auto = on CUDA ranks
    only (on a CPU rank the worker competes with the step for its cores)."""
    cores: str | None = None
    """The host's cores to share out between its ranks, as a cpulist (``"0-7,16"``); None =
    every core this process may use."""
    resources_every: float = 2.0
    """Seconds between ``resources`` events (0 = none)."""
    micro_batch: tuple[int | None, ...] | None = None
    """Largest forward/backward pass: one value for every rank or one per rank (None entries:
    no limit); a larger share runs as several passes with gradient accumulation."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Arithmetic of the forward pass: fp32, or autocast to bf16 / fp16 (fp16 with a scaler)."""
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    """How the learning rate goes from ``lr`` to ``min_lr`` after the warm-up."""
    warmup_steps: int = 0
    """Learning-rate warm-up: the first this many steps rise linearly to ``lr``."""
    min_lr: float = 0.0
    """The learning rate at the last step (cosine and linear schedules)."""
    clip_grad: float | None = None
    """Largest global gradient norm (over the all-reduced gradient); None = no clipping."""
    eval_every: int = 0
    """Evaluate the held-out set every this many steps and after the last (0 = never)."""
    eval_samples: int | None = None
    """Held-out items to evaluate; None = the task's whole eval set (synthetic images: 512)."""
    eval_data: str | None = None
    """causal_lm: a held-out text file (default: a held-out fraction of the training text)."""

    def __post_init__(self) -> None:
        if self.task not in BUILTIN_TASKS:
            split_task_spec(self.task)
        if self.model not in MODELS:
            raise UsageError(f"unknown --model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.dataset not in DATASETS:
            raise UsageError(
                f"unknown --dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}"
            )
        if self.policy not in POLICIES:
            raise UsageError(
                f"unknown --policy {self.policy!r}; choose one of {', '.join(POLICIES)}"
            )
        if self.task == "image" and self.dataset != "synthetic_image" and not self.data_dir:
            raise UsageError(f"--dataset {self.dataset} needs --data-dir (the CIFAR batches)")
        _positive("--global-batch", self.global_batch)
        _positive("--samples", self.samples)
        _positive("--rebalance-every", self.rebalance_every)
        _positive("--capacity-passes", self.capacity_passes)
        if (self.task == "image" and self.dataset == "synthetic_image"
                and self.samples < self.global_batch):
            raise UsageError(
                f"--samples {self.samples} is smaller than --global-batch {self.global_batch}: "
                "an epoch must hold at least one step"
            )
        if self.steps is not None and self.epochs is not None:
            raise UsageError("give either --steps or --epochs, not both")
        if self.steps is not None:
            _positive("--steps", self.steps)
        if self.epochs is not None:
            _positive("--epochs", self.epochs)
        if not self.lr > 0:
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 0:
            raise UsageError("--checkpoint-every and --keep-checkpoints must be >= 0")
        if self.threads is not None:
            _positive("--threads", self.threads)
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
                raise UsageError(
                    f"--slowdown-at {change.step}:{change.rank}:{change.factor}: need "
                    "STEP >= 1, RANK >= 0 and FACTOR >= 1"
                )
        if self.split is not None and self.policy == "proportional":
                raise UsageError(
                    "--policy proportional computes the split itself: drop --split, "
                    "or use --policy static (or dynamic, which starts from --split)"
                )
        if self.max_batch is not None and any(m is not None and m < 1 for m in self.max_batch):
            raise UsageError(f"--max-batch entries must be >= 1, got {self.max_batch}")
        if not self.resources_every >= 0:
            raise UsageError(f"--resources-every must be >= 0 seconds, got {self.resources_every}")
        if not 0 <= self.rebalance_threshold < 1:
            raise UsageError("--rebalance-threshold must be in [0, 1)")
        check_training(self)

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
    if config.split is None and config.global_batch < world_size:
        raise UsageError(
            f"--global-batch {config.global_batch} is smaller than the {world_size} ranks: "
            "every rank needs at least one sample"
        )
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
    if config.split is not None:
        check_split(config.split, config.global_batch, config.max_batch, world_size)
    check_training_world(config, world_size)


def check_split(split: Sequence[int], global_batch: int,
                max_batch: Sequence[int | None] | None, world_size: int) -> None:
    """The one check of a given ``--split``: one positive share per rank, summing to the
    global batch, none above its rank's ``--max-batch`` cap."""
    shown = f"--split {_csv(split)}"
    if any(b < 0 for b in split):
        raise UsageError(f"{shown} has a negative share")
    if sum(split) != global_batch:
        raise UsageError(f"{shown} sums to {sum(split)}, but --global-batch is {global_batch}")
    if len(split) != world_size:
        raise UsageError(f"{shown} has {len(split)} shares but the run has {world_size} "
                         "ranks: give one share per rank")
    if not any(split):
        raise UsageError(f"{shown} gives every rank 0 samples")
    for rank, share in enumerate(split):
        cap = max_batch[rank] if max_batch is not None else None
        if cap is not None and share > cap:
            raise UsageError(f"--split {_csv(split)}: rank {rank}'s share {share} exceeds its "
                             f"--max-batch {cap}")


def _positive(flag: str, value: int) -> None:
    if value < 1:
        raise UsageError(f"{flag} must be >= 1, got {value}")


def _csv(values: Sequence[object]) -> str:
    return ",".join(str(v) for v in values)


# ---------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m trainer`` argument parser (every flag maps to a TrainConfig field)."""
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m trainer",
        description=(
            "corral's trainer: exact data-parallel training over unequal ranks. Start it with "
            "torch's launcher: python -m torch.distributed.run --nproc-per-node N -m trainer ..."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("task, model and data")
    g.add_argument("--task", default=d.task,
                   help="what to train: image (--model on --dataset), causal_lm (LoRA "
                   "fine-tuning of a Hugging Face causal LM) or FILE.py:FUNCTION (a user task; "
                   "see docs/tasks.md)")
    g.add_argument("--task-option", type=task_option, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="an option of the causal_lm or user task (repeatable); VALUE is JSON "
                   "when it parses (16, 0.5, true), else text")
    g.add_argument("--model", choices=MODELS, default=d.model, help="network to train")
    g.add_argument("--norm", choices=NORMS, default=d.norm,
                   help="normalisation layers; auto = group for simple_cnn, batch for ResNets "
                   "(batch uses per-rank statistics, see docs/trainer.md)")
    g.add_argument("--dataset", choices=DATASETS, default=d.dataset, help="training data")
    g.add_argument("--data-dir", default=d.data_dir,
                   help="directory with the CIFAR python batches (data_batch_1..5/test_batch/"
                   "batches.meta for cifar10, train/test/meta for cifar100)")
    g.add_argument("--samples", type=int, default=d.samples,
                   help="number of images in the synthetic dataset")
    g = p.add_argument_group("batch and balancing")
    g.add_argument("--global-batch", type=int, default=d.global_batch,
                   help="B: samples per step over all ranks together")
    g.add_argument("--split", type=int_list, default=None,
                   help="initial per-rank local batches b0,b1,... summing to B (default equal)")
    g.add_argument("--policy", choices=POLICIES, default=d.policy,
                   help="static: keep the split; proportional: split by measured or profiled "
                   "capacity; dynamic: also re-balance from measured compute times")
    g.add_argument("--rebalance-every", type=int, default=d.rebalance_every,
                   help="steps between rebalancing decisions (dynamic)")
    g.add_argument("--rebalance-threshold", type=float, default=d.rebalance_threshold,
                   help="dynamic: move samples only when the predicted gain exceeds this "
                        "(plus the measured noise)")
    g.add_argument("--max-batch", type=cap_list, default=None,
                   help="per-rank largest local batch (memory caps), '-' for no cap, e.g. 64,-")
    g.add_argument("--capacity-passes", type=int, default=d.capacity_passes,
                   help="timed forward+backward passes per rank when capacities must be "
                   "measured (no profile)")
    g = p.add_argument_group("optimisation")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None,
                        help="the run's total steps (a resumed run continues up to it)")
    length.add_argument("--epochs", type=int, default=None,
                        help="the run's total epochs when --steps is not given (default 1)")
    g.add_argument("--lr", type=float, default=d.lr, help="learning rate")
    g.add_argument("--optimizer", choices=("sgd", "adamw"), default=d.optimizer,
                   help="sgd (momentum 0.9) or adamw")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="weight decay")
    g.add_argument("--seed", type=int, default=d.seed,
                   help="seed for weights, synthetic data and the per-epoch sample order")
    g = p.add_argument_group("run directory and checkpoints")
    g.add_argument("--run-dir", default=d.run_dir,
                   help="where metrics/rank-<r>.jsonl and checkpoints/ are written on each host")
    g.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="rank 0 checkpoints every K steps (0 = only at the end)")
    g.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints,
                   help="newest checkpoints kept (0 = all)")
    g.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in --run-dir on rank 0 "
                   "(starts fresh when there is none)")
    g = p.add_argument_group("devices and emulation")
    g.add_argument("--backend", choices=("auto", "gloo", "nccl"), default=d.backend,
                   help="auto = nccl when this host has CUDA, else gloo; pass gloo explicitly "
                   "when CPU-only and GPU hosts train together")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device,
                   help="auto = this rank's local GPU when present, else the CPU")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads per rank (default: one per core of the rank's share)")
    g.add_argument("--pin-cores", action=argparse.BooleanOptionalAction, default=d.pin_cores,
                   help="give this host's ranks disjoint cores (CUDA ranks: cores near their "
                   "GPU); with more ranks than cores nothing is pinned")
    g.add_argument("--prefetch", choices=("auto", "on", "off"), default=d.prefetch,
                   help="prepare the next step's batch while this one computes (pinned memory "
                   "and an asynchronous copy on CUDA); auto = on CUDA ranks only")
    g.add_argument("--cores", default=d.cores, metavar="LIST",
                   help="the cores to share out between this host's ranks, e.g. 0-7 (default: "
                   "every core the process may use)")
    g.add_argument("--slowdown", type=float_list, default=None,
                   help="EMULATION: behave s times slower (sleep (s-1) x compute each step). One "
                   f"value for every rank of this command, or one per global rank; env "
                   f"{SLOWDOWN_ENV} is used when the flag is absent")
    g.add_argument("--slowdown-at", type=slowdown_change, action="append", default=[],
                   metavar="STEP:RANK:FACTOR",
                   help="from step STEP on, rank RANK uses slowdown FACTOR (repeatable)")
    g.add_argument("--resources-every", type=float, default=d.resources_every,
                   help="seconds between resources events (0 = none)")
    add_training_flags(p, d)
    return p


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse flags into a TrainConfig; argparse errors exit 2, bad values raise UsageError."""
    args = build_parser().parse_args(argv)
    slowdown = args.slowdown
    if slowdown is None:
        env = os.environ.get(SLOWDOWN_ENV, "").strip()
        try:
            slowdown = float_list(env) if env else (1.0,)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"{SLOWDOWN_ENV}: {exc}") from None
    return TrainConfig(
        task=args.task, task_options=tuple(args.task_option),
        model=args.model, dataset=args.dataset, data_dir=args.data_dir, samples=args.samples,
        global_batch=args.global_batch, split=args.split, policy=args.policy,
        rebalance_every=args.rebalance_every, rebalance_threshold=args.rebalance_threshold,
        max_batch=args.max_batch, capacity_passes=args.capacity_passes, steps=args.steps,
        epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
        weight_decay=args.weight_decay, norm=args.norm, seed=args.seed, run_dir=args.run_dir,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
        resume=args.resume, slowdown=slowdown, slowdown_at=tuple(args.slowdown_at),
        backend=args.backend, device=args.device, threads=args.threads,
        pin_cores=args.pin_cores, cores=args.cores, prefetch=args.prefetch,
        resources_every=args.resources_every,
        **{name: getattr(args, name) for name in TRAINING_FIELDS},
    )
