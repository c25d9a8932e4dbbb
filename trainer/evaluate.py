"""Evaluation on the held-out set every ``--eval-every`` steps, sharded like the training batch.

The held-out set is cut into fixed chunks (of the smallest micro-batch of any rank, so every
rank can hold one), and the chunks are shared out over the ranks in proportion to the current
split (a rank with a share of 0 evaluates nothing). Each rank evaluates its chunks with the
task's ``evaluate`` (or, without one, its ``loss``), the per-chunk sums are gathered once, and
rank 0 adds them up in chunk order and writes an ``eval`` event. Because a chunk's sums do not
depend on which rank computed them and are added in the same order, the values are the same
whatever the split (on identical devices).

From the sums, every metric is its sum divided by the unit count (``count``, or ``tokens`` for
language models): ``loss_sum`` is reported as ``loss``, ``correct`` as ``accuracy``, any other
``NAME_sum`` as ``NAME`` and any other name as itself; without ``correct``, ``perplexity =
exp(loss)`` (language models). A task whose sums cannot be reduced so (no unit count, a value
that is not one number, two names for one metric) stops the run at its first evaluation with
a ``UsageError`` naming the key.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from profiles.user_errors import UsageError
from trainer.balance.balancer import round_split
from trainer.dist import print0
from trainer.event_log import EventWriter
from trainer.events import EvalEvent
from trainer.step.amp import autocast
from trainer.step.batches import collate, move_to
from trainer.tasks import Dataset, Task

DEFAULT_CHUNK = 64
"""Items per evaluation chunk when no rank has a micro-batch."""


class Subset:
    """The first ``size`` items of ``data``."""

    def __init__(self, data: Dataset, size: int) -> None:
        self.data, self.size = data, min(size, len(data))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Any:
        return self.data[index]


def held_out(task: Task, eval_samples: int | None, source: str) -> Dataset:
    """The items to evaluate: the task's eval set, its first ``eval_samples`` items."""
    if task.eval_data is None or len(task.eval_data) == 0:
        raise UsageError(f"--eval-every needs held-out data, and {source} has none: give "
                         "--eval-samples (synthetic images), a CIFAR --data-dir with its test "
                         "batch, --eval-data FILE or the eval_fraction option (causal_lm), "
                         "or eval_data in a user task")
    return Subset(task.eval_data, eval_samples) if eval_samples else task.eval_data


class Evaluator:
    """Every ``every`` steps and after the last: evaluate, gather once, rank 0 reports."""

    def __init__(self, *, task: Task, data: Dataset, every: int, model: nn.Module,
                 rank: int, device: torch.device, precision: str,
                 micro_batch: Sequence[int | None], events: EventWriter) -> None:
        self.task, self.data, self.every, self.model = task, data, every, model
        self.rank, self.device, self.precision, self.events = rank, device, precision, events
        self.chunk = min((m for m in micro_batch if m is not None), default=DEFAULT_CHUNK)

    def due(self, step: int, total_steps: int) -> bool:
        """Evaluate after ``step``? Every ``every`` steps and after the run's last step."""
        return bool(self.every) and (step % self.every == 0 or step == total_steps)

    def run(self, step: int, split: Sequence[int]) -> EvalEvent | None:
        """Evaluate with the current ``split`` (collective); rank 0 returns the event."""
        started = time.perf_counter()
        # Every rank evaluates with rank 0's BatchNorm statistics: the step just run left the
        # buffers equal (BufferSync, trainer/step/accumulate.py).
        chunks = range(math.ceil(len(self.data) / self.chunk))
        shares = round_split([float(s) for s in split], len(chunks), min_batch=0)
        first = sum(shares[: self.rank])
        mine = {c: self._chunk_sums(c) for c in chunks[first:first + shares[self.rank]]}
        gathered: list[dict[int, dict[str, float]] | None] = [None] * len(split)
        dist.all_gather_object(gathered, mine)
        if self.rank != 0:
            return None
        by_chunk = {c: sums for part in gathered if part for c, sums in part.items()}
        totals: dict[str, float] = {}
        for c in sorted(by_chunk):
            for key, value in by_chunk[c].items():
                totals[key] = totals.get(key, 0.0) + value
        event = eval_event(step, totals, len(self.data), time.perf_counter() - started)
        self.events.emit(event)
        shown = "  ".join(f"{name} {value:.4g}" for name, value in event.metrics.items())
        print0(f"eval at step {step}: {shown}")
        return event

    def _chunk_sums(self, chunk: int) -> dict[str, float]:
        items = range(chunk * self.chunk, min((chunk + 1) * self.chunk, len(self.data)))
        batch = move_to(collate(self.task, [self.data[i] for i in items]), self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), autocast(self.precision, self.device):
                if self.task.evaluate is not None:
                    return chunk_sums(self.task.evaluate(self.model, batch))
                loss_sum, count = self.task.loss(self.model, batch)
                return {"loss_sum": float(loss_sum), "count": float(count)}
        finally:
            self.model.train(was_training)


UNIT_KEYS = ("count", "tokens")
"""The names ``evaluate`` gives the loss-unit count (images; target tokens)."""
RENAMED = {"loss_sum": "loss", "correct": "accuracy"}
"""Sums reported under another name than ``NAME_sum -> NAME``."""


def chunk_sums(returned: Any) -> dict[str, float]:
    """``evaluate``'s return value as ``{name: sum}``; a ``UsageError`` naming what is wrong."""
    if not isinstance(returned, dict):
        raise UsageError(f"the task's evaluate(model, batch) returned {type(returned).__name__}"
                         ", not a dict of metric sums such as {'loss_sum': ..., 'count': ...}")
    sums: dict[str, float] = {}
    for key, value in returned.items():
        try:
            sums[str(key)] = float(value)
        except (TypeError, ValueError, RuntimeError):
            raise UsageError(
                f"the task's evaluate returned {key!r} = {str(value)[:60]!r}, which is not one "
                "number: return a sum per name (a Python number or a one-element tensor), "
                "e.g. correct = (pred == y).sum()") from None
    return sums


def metric_name(key: str) -> str:
    """The name the sum ``key`` is reported under (see the module docstring)."""
    if key in RENAMED:
        return RENAMED[key]
    return key[:-len("_sum")] if key.endswith("_sum") and len(key) > len("_sum") else key


def reduce_sums(totals: dict[str, float]) -> dict[str, float]:
    """Every metric: its sum per unit, and ``perplexity`` when nothing counts correct answers.

    Raises ``UsageError`` when there is no unit count or two keys name one metric."""
    units = [key for key in UNIT_KEYS if key in totals]
    if not units:
        raise UsageError(f"the task's evaluate returned {sorted(totals)} with no unit count: "
                         "add 'count' (items) or 'tokens' (target tokens) to divide the sums by")
    count = totals[units[0]]
    metrics: dict[str, float] = {}
    named: dict[str, str] = {}
    for key, value in totals.items():
        if key in UNIT_KEYS:
            continue
        name = metric_name(key)
        if name in named:
            raise UsageError(f"the task's evaluate returned both {named[name]!r} and {key!r}, "
                             f"which are both reported as {name!r}: return one of them")
        named[name] = key
        metrics[name] = value / count if count else math.nan
    if "accuracy" not in metrics and "perplexity" not in metrics and "loss" in metrics:
        loss = metrics["loss"]
        metrics["perplexity"] = math.exp(loss) if loss < 700 else math.inf
    return metrics


def eval_event(step: int, totals: dict[str, float], samples: int, seconds: float) -> EvalEvent:
    """The ``eval`` event of the summed metrics (see the module docstring)."""
    metrics = {k: v for k, v in reduce_sums(totals).items() if math.isfinite(v)}
    count = next(totals[key] for key in UNIT_KEYS if key in totals)
    return EvalEvent(t=time.time(), rank=0, step=step, samples=samples, units=int(count),
                     loss=metrics.get("loss"), accuracy=metrics.get("accuracy"),
                     perplexity=metrics.get("perplexity"), eval_s=seconds, metrics=metrics)
