"""Evaluation on the held-out set every ``--eval-every`` steps, sharded like the training batch.

The held-out set is cut into fixed chunks (of the smallest micro-batch of any rank, so every
rank can hold one), and the chunks are shared out over the ranks in proportion to the current
split (a rank with a share of 0 evaluates nothing). Each rank evaluates its chunks with the
task's ``evaluate`` (or, without one, its ``loss``), the per-chunk sums are gathered once, and
rank 0 adds them up in chunk order and writes an ``eval`` event. Because a chunk's sums do not
depend on which rank computed them and are added in the same order, the values are the same
whatever the split (on identical devices).

From the sums: ``loss = loss_sum / count`` (``tokens`` for language models);
``accuracy = correct / count`` when the task counts correct predictions (images), else
``perplexity = exp(loss)`` (language models).
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
from trainer.events import EvalEvent, EventWriter
from trainer.step.accumulate import autocast
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
        shown = (f"accuracy {event.accuracy:.4f}" if event.accuracy is not None else
                 f"perplexity {event.perplexity:.3f}" if event.perplexity is not None else "")
        print0(f"eval at step {step}: loss {event.loss} {shown}".rstrip())
        return event

    def _chunk_sums(self, chunk: int) -> dict[str, float]:
        items = range(chunk * self.chunk, min((chunk + 1) * self.chunk, len(self.data)))
        batch = move_to(collate(self.task, [self.data[i] for i in items]), self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), autocast(self.precision, self.device):
                if self.task.evaluate is not None:
                    return {k: float(v) for k, v in self.task.evaluate(self.model, batch).items()}
                loss_sum, count = self.task.loss(self.model, batch)
                return {"loss_sum": float(loss_sum), "count": float(count)}
        finally:
            self.model.train(was_training)


def eval_event(step: int, totals: dict[str, float], samples: int, seconds: float) -> EvalEvent:
    """The ``eval`` event of the summed metrics (see the module docstring)."""
    count = totals.get("count", totals.get("tokens", 0.0))  # images count, LMs count tokens
    loss = totals.get("loss_sum", math.nan) / count if count else math.nan
    accuracy = totals["correct"] / count if "correct" in totals and count else None
    perplexity = None
    if accuracy is None and math.isfinite(loss):
        perplexity = math.exp(loss) if loss < 700 else math.inf
    return EvalEvent(t=time.time(), rank=0, step=step, samples=samples, units=int(count),
                     loss=loss if math.isfinite(loss) else None, accuracy=accuracy,
                     perplexity=perplexity if perplexity is None or math.isfinite(perplexity)
                     else None, eval_s=seconds)
