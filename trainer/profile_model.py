"""Benchmark one model on this host and store the profile the balancer starts from.

    python -m trainer.profile_model --model resnet18 [--device cpu|cuda:N] [--threads T]
        [--slowdown S] [--batches 8,16,32] [--json] [--save] [--store DIR]

The step timed is the trainer's compute phase, solo (no DDP): forward + backward of the model
on synthetic CIFAR-shaped input, with the ``--slowdown`` emulation applied exactly as the
trainer applies it, under the same thread count. ``profiles.bench`` does the timing, the fit
``t(b) = a + c*b`` and the largest-batch search; ``profiles.store`` keeps the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from profiles.bench import BenchConfig, StepFn, benchmark
from profiles.profile import Profile
from profiles.store import save_profile
from profiles.user_errors import CorralError, UsageError
from trainer.compat import set_tf32
from trainer.step.amp import autocast
from trainer.step.slowdown import emulate_slowdown
from trainer.tasks.image.models import build_model

NUM_CLASSES = 10
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
"""The precisions a profile can be measured in: the trainer's, less ``auto`` (a run looks its
profile up by the precision ``auto`` resolved to)."""
IMAGE_SHAPE = (3, 32, 32)


def resolve_device(device: str | None) -> str:
    """``cpu`` or ``cuda:N`` (checked against this host); None picks ``cuda:0`` when usable."""
    if device is None:
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda":
        device = "cuda:0"
    prefix, _, index = device.partition(":")
    if prefix != "cuda" or not index.isdigit():
        raise UsageError(f"--device must be cpu or cuda:N, got {device!r}")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this host; use --device cpu")
    if int(index) >= torch.cuda.device_count():
        raise UsageError(
            f"--device {device}: this host has {torch.cuda.device_count()} CUDA device(s)"
        )
    return device


def make_step(
    model_name: str, *, device: str, slowdown: float = 1.0, norm: str = "batch",
    precision: str = "fp32",
) -> StepFn:
    """A step function for ``profiles.bench``: forward + backward at a local batch.

    It returns the emulated compute time (the trainer's ``compute_s``): the input is built
    outside the timed part, the slowdown is applied after a CUDA synchronisation.
    """
    model = build_model(model_name, num_classes=NUM_CLASSES, norm=norm)
    return model_step(model, device=device, slowdown=slowdown, precision=precision)


def model_step(model: nn.Module, *, device: str, slowdown: float = 1.0,
               precision: str = "fp32") -> StepFn:
    """``make_step`` for a model already built (moved to ``device``, in training mode), in the
    arithmetic the trainer uses for ``precision``: its TF32 flags (off for fp32: torch's
    default lets cuDNN convolutions use TF32) and its autocast."""
    set_tf32(precision == "tf32")
    model = model.to(device).train()
    loss_fn = nn.CrossEntropyLoss()
    cuda = device.startswith("cuda")

    def step(batch: int) -> float:
        inputs = torch.randn(batch, *IMAGE_SHAPE, device=device)
        targets = torch.randint(0, NUM_CLASSES, (batch,), device=device)
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        with autocast(precision, torch.device(device)):
            loss = loss_fn(model(inputs), targets)
        loss.backward()
        if cuda:
            torch.cuda.synchronize(device)
        return emulate_slowdown(slowdown, time.perf_counter() - start)

    return step


def profile_model(
    model_name: str,
    *,
    device: str = "cpu",
    threads: int | None = None,
    slowdown: float = 1.0,
    config: BenchConfig | None = None,
    norm: str = "batch",
    progress: bool = False,
    precision: str = "fp32",
) -> Profile:
    """Benchmark ``model_name`` on ``device`` with ``threads`` CPU threads and ``slowdown``,
    in ``precision`` (recorded in the profile and its key)."""
    if threads is not None:
        torch.set_num_threads(threads)
    model = build_model(model_name, num_classes=NUM_CLASSES, norm=norm)
    # What each step's gradient exchange carries (the pre-run estimate reads it).
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    profile = benchmark(
        model_step(model, device=device, slowdown=slowdown, precision=precision),
        model=model_name,
        device=device,
        slowdown=slowdown,
        threads=torch.get_num_threads(),
        config=config,
        progress=(lambda line: print(f"  {line}", file=sys.stderr)) if progress else None,
    )
    return dataclasses.replace(profile, gradient_bytes=int(trainable), precision=precision)


def format_profile(profile: Profile) -> str:
    """A plain text table of a profile, for people."""
    lines = [
        f"model {profile.model} on {profile.device} ({profile.device_name}), host {profile.host}",
        f"torch {profile.torch_version}, {profile.precision or 'precision not recorded'}, "
        f"{profile.threads} threads, "
        f"slowdown {profile.slowdown:g}, measured {profile.created}",
        "",
        f"{'batch':>6}  {'step s':>9}  {'samples/s':>10}  {'fit s':>9}",
    ]
    for batch, seconds in zip(profile.batches, profile.step_s, strict=True):
        fitted = profile.step_time(batch)
        lines.append(f"{batch:>6}  {seconds:>9.4f}  {batch / seconds:>10.1f}  {fitted:>9.4f}")
    lines += [
        "",
        f"fit: t(b) = {profile.a:.4g} s + {profile.c:.4g} s * b",
        "max batch: " + (str(profile.max_batch) if profile.max_batch else "unknown"),
    ]
    return "\n".join(lines)


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"--batches must be positive integers separated by commas, e.g. 8,16,32; got {text!r}"
        )
    return values


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _slowdown(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 1.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--slowdown must be a number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m trainer.profile_model``."""
    parser = argparse.ArgumentParser(
        prog="python -m trainer.profile_model",
        description="Benchmark a model's forward+backward at several local batch sizes on this "
        "host, fit step time t(b) = a + c*b, find the largest batch, and optionally store it.",
    )
    parser.add_argument("--model", required=True, help="simple_cnn, resnet18 or resnet50")
    parser.add_argument("--device", help="cpu or cuda:N (default: cuda:0 if usable, else cpu)")
    parser.add_argument("--threads", type=_positive_int,
                        help="CPU threads for torch (default: torch's own choice)")
    parser.add_argument("--slowdown", type=_slowdown, default=1.0,
                        help="emulated slowdown factor, as the trainer's --slowdown (default 1)")
    parser.add_argument("--batches", type=_batches, default=(8, 16, 32),
                        help="local batch sizes to time, comma separated (default 8,16,32)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per batch (default 2)")
    parser.add_argument("--repeats", type=_positive_int, default=5,
                        help="timed steps per batch; the median is kept (default 5)")
    parser.add_argument("--no-max-batch", action="store_true",
                        help="skip the search for the largest batch that fits")
    parser.add_argument("--norm", default="batch", help="batch, syncbatch or group (default batch)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="the arithmetic to time, as the trainer's --precision: fp32 (IEEE, "
                        "TF32 off), tf32, bf16 or fp16; part of the stored key (default fp32)")
    parser.add_argument("--json", action="store_true", help="print the profile as JSON")
    parser.add_argument("--save", action="store_true", help="store the profile for the trainer")
    parser.add_argument("--store", type=Path,
                        help="profile directory (default $CORRAL_PROFILE_DIR, else "
                        "$XDG_CACHE_HOME/corral/profiles or ~/.cache/corral/profiles)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.warmup < 0:
            raise UsageError(f"--warmup must be >= 0, got {args.warmup}")
        device = resolve_device(args.device)
        config = BenchConfig(
            batches=args.batches,
            warmup=args.warmup,
            repeats=args.repeats,
            find_max_batch=not args.no_max_batch,
            max_batch_limit=max(BenchConfig().max_batch_limit, *args.batches),
        )
        profile = profile_model(
            args.model, device=device, threads=args.threads, slowdown=args.slowdown,
            config=config, norm=args.norm, progress=not args.json, precision=args.precision,
        )
        saved = save_profile(profile, root=args.store) if args.save else None
    except CorralError as exc:
        print(f"{exc.title}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        data = profile.to_dict()
        data["samples_per_s"] = [profile.samples_per_s(b) for b in profile.batches]
        data["saved_to"] = str(saved) if saved else None
        print(json.dumps(data, indent=2))
    else:
        print(format_profile(profile))
        if saved:
            print(f"saved: {saved}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
