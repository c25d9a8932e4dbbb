"""The opt-ins wait on the device once a step of corral's own: the step's gather of every rank's
loss, units and compute time (``trainer/integrations/run.py``), as corral's loop does
(tests/trainer/scenarios/test_sync_free_step.py). The Hugging Face opt-in's per-round sums and the
DDP
helper's loss stay on the device until then.

Counted on the CPU, in this process: a ``TorchDispatchMode`` sees every ``_local_scalar_dense``
(``float()``, ``int()``, ``.item()``, ``bool()`` of a tensor: each waits for a GPU), and
``Tensor.tolist`` of a float or bool tensor (a read that dispatches nothing on the CPU; integer
index lists are made on the host) is counted beside it; a read is
corral's when the innermost frame outside torch that made it is in corral's ``trainer/`` — the
Trainer's and the script's own reads are theirs. A blocking collective of corral's counts too.
On a GPU, ``tests/trainer/scenarios/test_sync_free_step.py``'s debug mode would raise at each of
them.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import TensorDataset

from trainer.event_log import events_path
from trainer.events import StepEvent, parse_event
from trainer.integrations import run as run_module
from trainer.integrations.contract import POLICY_ENV, REBALANCE_EVERY_ENV, RUN_DIR_ENV

REPO = Path(__file__).resolve().parents[3]
CORRAL = str(REPO / "trainer")
TORCH = str(Path(torch.__file__).parent)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _corrals(stack: list[traceback.FrameSummary]) -> bool:
    """Whether the innermost frame outside torch (and this file) is corral's trainer."""
    for frame in reversed(stack):
        if frame.filename.startswith(TORCH) or frame.filename == __file__:
            continue
        return frame.filename.startswith(CORRAL)
    return False


class HostReads(TorchDispatchMode):
    """Counts corral's host reads of tensor values (and its blocking collectives)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        if func is torch.ops.aten._local_scalar_dense.default and _corrals(
                traceback.extract_stack()):
            self.count += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostReads]:
    """Corral's host waits while the block runs (``HostReads.count``)."""
    reads = HostReads()
    tolist = torch.Tensor.tolist

    def counted_tolist(self: torch.Tensor) -> Any:
        # a batch's index lists are integer tensors the sampler made on the host: not counted
        floats = self.is_floating_point() or self.dtype == torch.bool
        if floats and _corrals(traceback.extract_stack()):
            reads.count += 1
        return tolist(self)

    def blocking(name: str) -> Callable[..., Any]:
        original = getattr(dist, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if not kwargs.get("async_op") and _corrals(traceback.extract_stack()):
                reads.count += 1
            return original(*args, **kwargs)
        return call

    monkeypatch.setattr(torch.Tensor, "tolist", counted_tolist)
    for name in ("all_reduce", "broadcast", "all_gather", "all_gather_object", "barrier"):
        monkeypatch.setattr(dist, name, blocking(name))
    with reads:
        yield reads


def count_steps(monkeypatch: pytest.MonkeyPatch, reads: HostReads, per_step: list[int]) -> None:
    """Each ``ScriptRun.step_done``'s own part of ``reads``, in ``per_step`` (one per step)."""
    step_done = run_module.ScriptRun.step_done

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        before = reads.count
        step_done(self, *args, **kwargs)
        per_step.append(reads.count - before)

    monkeypatch.setattr(run_module.ScriptRun, "step_done", wrapped)


def _steps(run_dir: Path) -> list[StepEvent]:
    lines = events_path(run_dir, 0).read_text().splitlines()
    return [e for e in map(parse_event, lines) if isinstance(e, StepEvent)]


@pytest.fixture
def lone_group() -> Iterator[None]:
    """A process group of one rank in this process (gloo, in-memory store)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_the_ddp_helper_waits_once_a_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          lone_group: None) -> None:
    from trainer.integrations.ddp import Shares

    run_dir = tmp_path / "run"
    monkeypatch.setenv(RUN_DIR_ENV, str(run_dir))
    monkeypatch.setenv(POLICY_ENV, "dynamic")  # the rebalance path runs every step too
    monkeypatch.setenv(REBALANCE_EVERY_ENV, "3")
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(48, 4), torch.randn(48, 1))
    model = DistributedDataParallel(torch.nn.Linear(4, 1))
    shares = Shares(len(data), global_batch=8, epochs=1, model=model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    per_step: list[int] = []
    losses: list[float] = []
    with counting(monkeypatch) as total:
        count_steps(monkeypatch, total, per_step)
        for x, y in shares.loader(data):
            mean = torch.nn.functional.mse_loss(model(x), y)
            losses.append(mean.item())  # the script's own read: not corral's
            shares.loss(mean, model).backward()
            opt.step()
            opt.zero_grad()
        shares._finish()
    reported = _steps(run_dir)
    assert [e.step for e in reported] == list(range(1, len(reported) + 1))
    assert len(reported) >= len(losses) - 1  # the last step is reported at exit or not
    assert per_step == [1] * len(reported)
    assert total.count == len(reported)
    # the reported loss is what the script computed (alone: the global mean is its mean)
    assert [e.global_loss for e in reported] == pytest.approx(losses[:len(reported)])


def _hf_script() -> Any:
    """The example HF Trainer script as a module (a machine without its packages skips)."""
    for package in ("datasets", "peft", "transformers"):
        pytest.importorskip(package, reason=f"examples/scripts/hf_trainer.py imports {package}")
    path = REPO / "examples" / "scripts" / "hf_trainer.py"
    spec = importlib.util.spec_from_file_location("hf_trainer_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hf_opt_in_waits_once_a_step(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lm_fixtures import make_tiny_lm

    from trainer.integrations.hf import corral

    lm = make_tiny_lm(tmp_path / "lm")
    run_dir = tmp_path / "run"
    monkeypatch.setenv(RUN_DIR_ENV, str(run_dir))
    args = argparse.Namespace(model=str(lm.model), data=str(lm.pairs), out=str(tmp_path / "out"),
                              batch_size=3, accumulation=2, steps=4, lr=0.5, optim="sgd",
                              save_steps=100, seed=7, cpu=True)
    trainer = corral(_hf_script().build_trainer(args))
    per_step: list[int] = []
    with counting(monkeypatch) as total:
        count_steps(monkeypatch, total, per_step)
        trainer.train()
    reported = _steps(run_dir)
    assert [e.step for e in reported] == [1, 2, 3, 4]
    assert per_step == [1] * 4
    assert total.count == 4  # nothing per round: the rounds' sums stayed tensors
    assert all(e.loss_units and e.global_loss and e.global_loss > 0 for e in reported)


@contextmanager
def _no_sync(step: int) -> Iterator[None]:
    """From step 3 on (DDP builds its buckets in the first ones): any sync torch knows of
    raises (the gather's event read is the one wait, counted by ``PendingTallies.reads``)."""
    if step < 3:
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_a_gpu_the_ddp_helper_waits_only_for_its_gather(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.integrations import ddp
    from trainer.step.tally import PendingTallies

    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run"))
    dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1,
                            device_id=torch.device("cuda", 0))
    reads: list[int] = []
    step_begins = ddp.Shares._step_begins

    def checked(self: Any, step: int) -> None:
        before = PendingTallies.reads
        with _no_sync(step):
            step_begins(self, step)
        reads.append(PendingTallies.reads - before)

    monkeypatch.setattr(ddp.Shares, "_step_begins", checked)
    try:
        data = TensorDataset(torch.randn(64, 32), torch.randn(64, 1))
        model = DistributedDataParallel(torch.nn.Linear(32, 1).cuda())
        shares = ddp.Shares(len(data), global_batch=8, epochs=1, model=model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in shares.loader(data):
            mean = torch.nn.functional.mse_loss(model(x.cuda()), y.cuda())
            shares.loss(mean, model).backward()
            opt.step()
            opt.zero_grad()
        shares._finish()
    finally:
        dist.destroy_process_group()
    # The sampler asks for steps 1..8 and once more at the epoch's end (to report step 8):
    # the first ask reports nothing yet; each later one reads its step's gather once.
    assert reads == [0] + [1] * 8


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_a_gpu_the_hf_opt_in_waits_only_for_its_gather(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lm_fixtures import make_tiny_lm

    from trainer.integrations import hf
    from trainer.step.tally import PendingTallies

    lm = make_tiny_lm(tmp_path / "lm")
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "run"))
    reads: list[int] = []
    round_done, step_end = hf._HFRank.round_done, hf._CorralEvents.on_step_end

    def checked_round(self: Any, *args: Any) -> None:
        with _no_sync(3):
            round_done(self, *args)

    def checked_end(self: Any, args: Any, state: Any, *rest: Any, **kwargs: Any) -> None:
        before = PendingTallies.reads
        with _no_sync(state.global_step):
            step_end(self, args, state, *rest, **kwargs)
        reads.append(PendingTallies.reads - before)

    monkeypatch.setattr(hf._HFRank, "round_done", checked_round)
    monkeypatch.setattr(hf._CorralEvents, "on_step_end", checked_end)
    args = argparse.Namespace(model=str(lm.model), data=str(lm.pairs), out=str(tmp_path / "out"),
                              batch_size=3, accumulation=2, steps=4, lr=0.5, optim="sgd",
                              save_steps=100, seed=7, cpu=False)
    trainer = hf.corral(_hf_script().build_trainer(args))
    trainer.train()
    assert reads == [1] * 4
