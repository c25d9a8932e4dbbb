"""A training step reads the device once: the tally, as one tensor (trainer/step/tally.py).

The trainer runs in this process (a one-rank group) with its step wrapped: on the CPU every read
of a floating-point tensor's values during a step is counted (the batch's indices are integer
tensors of the host, not device results); on a GPU the steps after the first two run under
``torch.cuda.set_sync_debug_mode("error")``, which raises at any synchronising call torch knows
of, and the one documented wait (the tally's event) is counted by ``PendingTallies.reads``.

The whole loop iteration is counted too (value reads, blocking collectives, DDP's gradient
collectives through its comm hook), with the dynamic policy deciding every 5 steps and
micro-batches: one wait per iteration, and no gradient collective for a rank alone. (With more
than one rank, the dynamic decision is still a blocking broadcast every ``rebalance_every``
steps, not yet carried in the tally.)
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from trainer import train as train_module
from trainer.exact_loop import Trainer
from trainer.resources import ResourceReporter
from trainer.settings.train_config import TrainConfig
from trainer.step.clock import StepClock
from trainer.step.tally import PendingTallies

READS = ("item", "tolist", "__float__", "__bool__", "__int__")
"""The tensor methods that hand a tensor's values to Python."""
STEPS = 6


@contextmanager
def _counting_float_reads(counts: list[int]) -> Iterator[None]:
    """Count reads of floating-point tensors (by any of ``READS``) into ``counts[0]``."""
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counted(original: Callable[..., Any]) -> Callable[..., Any]:
        def read(self: torch.Tensor, *args: Any) -> Any:
            if self.is_floating_point() or self.dtype == torch.bool:
                counts[0] += 1
            return original(self, *args)
        return read

    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@contextmanager
def _signals_kept() -> Iterator[None]:
    """The trainer installs SIGINT/SIGTERM handlers: give pytest its own back."""
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str,
         wrap: Callable[[int, Callable[[], Any]], Any], steps: int = STEPS,
         **flags: Any) -> None:
    """The trainer in this process, each step through ``wrap(step, run_the_step)``."""
    monkeypatch.setenv("CORRAL_PROFILE_DIR", str(tmp_path / "no-profiles"))
    # A lone rank: the trainer picks MASTER_ADDR/PORT itself and sets them in this process's
    # environment. Set, then removed, through monkeypatch, each is taken away again at the
    # test's end, so no later launch in this process inherits the port of a finished group.
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    original = Trainer.train_step

    def wrapped(self: Any, step: int) -> Any:
        return wrap(step, lambda: original(self, step))

    monkeypatch.setattr(Trainer, "train_step", wrapped)
    config = TrainConfig(samples=128, global_batch=32, steps=steps, device=device,
                         run_dir=str(tmp_path / "run"), resources_every=0.0, **flags)
    with _signals_kept():
        assert train_module.train(config) == 0
    assert not dist.is_initialized()


@pytest.mark.slow
def test_a_cpu_step_reads_one_float_tensor_the_tally(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # simple_cnn here; resnet18, whose BatchNorm buffers are updated in every step, is counted
    # the same way, step by step, in the loop test below, which trains it anyway.
    per_step: list[int] = []
    reads_before = PendingTallies.reads

    def wrap(step: int, run_step: Callable[[], Any]) -> Any:
        counts = [0]
        with _counting_float_reads(counts):
            result = run_step()
        per_step.append(counts[0])
        return result

    _run(tmp_path, monkeypatch, "cpu", wrap, model="simple_cnn", threads=1)
    assert per_step == [1] * STEPS
    assert PendingTallies.reads - reads_before == STEPS


BLOCKING_COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "broadcast_object_list",
                        "all_gather_object", "barrier")
"""torch.distributed calls that block the host unless started with ``async_op=True`` (under
gloo a collective of device tensors waits for the device too)."""


@pytest.mark.slow
def test_each_loop_iteration_waits_once_with_dynamic_decisions_and_micro_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole loop iteration counts (step, report, the dynamic policy's decision every 5
    steps), not only train_step: value reads of device results, blocking collectives, and
    gradient collectives (DDP's comm hook). One rank: nothing to exchange but the tally. Each
    resnet18 step (BatchNorm buffers) also reads one float tensor, the tally, as a simple_cnn
    step does (the test above)."""
    waits: dict[int, int] = {}
    gradient_collectives: list[int] = []
    current = [0]
    counting = [False]
    counts = [0]

    def wrap(step: int, run_step: Callable[[], Any]) -> Any:
        if current[0]:
            waits[current[0]] = counts[0]
        current[0], counts[0], counting[0] = step, 0, True
        return run_step()

    def blocking(name: str) -> Callable[..., Any]:
        original = getattr(dist, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if counting[0] and not kwargs.get("async_op"):
                counts[0] += 1
            return original(*args, **kwargs)
        return call

    for name in BLOCKING_COLLECTIVES:
        monkeypatch.setattr(dist, name, blocking(name))
    hook = StepClock.hook

    @functools.wraps(hook)  # DDP reads the hook's signature
    def counted_hook(self: StepClock, group: Any, bucket: Any) -> Any:
        gradient_collectives.append(current[0])
        return hook(self, group, bucket)

    monkeypatch.setattr(StepClock, "hook", counted_hook)
    stop = ResourceReporter.stop

    def loop_done(self: ResourceReporter) -> None:  # the loop ended: the last iteration too
        waits[current[0]], counting[0] = counts[0], False
        stop(self)

    monkeypatch.setattr(ResourceReporter, "stop", loop_done)
    reads, tallies_before = [0], PendingTallies.reads
    per_step: list[int] = []  # float reads in each train_step
    with _counting_float_reads(reads):
        def read_counted(step: int, run_step: Callable[[], Any]) -> Any:
            before = reads[0]
            result = wrap(step, run_step)
            per_step.append(reads[0] - before)
            counts[0] += reads[0] - before
            return result
        _run(tmp_path, monkeypatch, "cpu", read_counted, steps=10, model="resnet18",
             threads=1, policy="dynamic", rebalance_every=5, micro_batch=(8,))
    assert per_step == [1] * 10 and PendingTallies.reads - tallies_before == 10
    assert waits == dict.fromkeys(range(1, 11), 1)
    assert gradient_collectives == []  # alone: no all-reduce, over a group of one or not


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_gpu_step_has_no_sync_but_the_tally_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    reads: list[int] = []

    def wrap(step: int, run_step: Callable[[], Any]) -> Any:
        if step <= 2:  # DDP builds its buckets in the first steps
            return run_step()
        before = PendingTallies.reads
        torch.cuda.set_sync_debug_mode("error")
        try:
            result = run_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        reads.append(PendingTallies.reads - before)
        return result

    _run(tmp_path, monkeypatch, "cuda", wrap, model="resnet18", precision=precision)
    assert reads == [1] * (STEPS - 2)
