"""The next step's batch, prepared while the current step computes.

A rank's batch for step ``s`` depends only on ``s``, the split and the rank
(``trainer.step.batches``), so it can be built ahead: after handing out step ``s``'s batch, one
worker thread starts on step ``s + 1``'s with the same split. If the split has changed by then
(a rebalance), the prepared batch is dropped and the right one built in place: the batch a step
trains on is always the one ``local_batch`` gives, so exactness does not depend on prefetching.

On CUDA the batch is collated into pinned host memory and copied with ``non_blocking`` on the
prefetcher's own CUDA stream, so the copy can overlap the step's compute on the default stream:
the copy records an event on its stream, and the step's stream waits on that event (a wait on
the device, not the host) before it uses the batch; the batch's tensors are then marked as used
by the step's stream (``record_stream``) so the allocator does not hand their memory back to the
copy stream early. On a CPU rank the worker competes with the step for the
rank's own cores (and the GIL); ``auto`` therefore prefetches on CUDA only — the CPU
measurement is in docs/benchmarks/balance.md ("Batch prefetch on a CPU rank").
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from trainer.step.batch_order import GlobalBatchOrder
from trainer.step.batches import local_batch, map_tensors, move_to
from trainer.tasks import Task


def prefetch_wanted(setting: str, device: torch.device) -> bool:
    """Whether a rank on ``device`` prefetches under ``--prefetch setting``."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


class BatchPrefetcher:
    """``batch(step, split)``: this rank's batch for ``step``, prepared one step ahead."""

    def __init__(self, task: Task, order: GlobalBatchOrder, rank: int,
                 device: torch.device) -> None:
        self.task, self.order, self.rank, self.device = task, order, rank, device
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-prefetch")
        self._ahead: tuple[int, tuple[int, ...], int, Future[tuple[Any, Any]]] | None = None
        """The batch being prepared: its step, split and rank (a live membership change moves
        this rank to another place: ``rank`` is set anew), and the work making it."""
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        """The CUDA stream the copies run on (None on a CPU rank)."""
        self.hits = 0
        """Batches that were ready-made (for tests and curiosity)."""

    def batch(self, step: int, split: Sequence[int], last_step: int) -> Any:
        """Step ``step``'s batch for ``split``; starts preparing ``step + 1``'s (same split)
        unless ``step`` is ``last_step``."""
        split = tuple(split)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[:3] == (step, split, self.rank):
            batch, copied = ahead[3].result()
            self.hits += 1
        else:
            if ahead is not None:  # a stale batch (the split or the rank changed)
                ahead[3].result()  # let the worker finish
            batch, copied = self._build(step, split, self.rank)
        if step < last_step:
            self._ahead = (step + 1, split, self.rank,
                           self._pool.submit(self._build, step + 1, split, self.rank))
        if copied is not None:  # the step's stream waits for the copy, on the device
            current = torch.cuda.current_stream(self.device)
            current.wait_event(copied)
            map_tensors(batch, lambda t: _used_by(t, current))
        return batch

    def _build(self, step: int, split: tuple[int, ...], rank: int) -> tuple[Any, Any]:
        """The batch, and on CUDA the event its copy on the prefetch stream records."""
        if self.stream is None:
            return local_batch(self.task, self.order, step, split, rank, self.device), None
        host = local_batch(self.task, self.order, step, split, rank, torch.device("cpu"))
        host = map_tensors(host, torch.Tensor.pin_memory)  # an async copy needs pinned memory
        with torch.cuda.stream(self.stream):
            batch = move_to(host, self.device)
            copied = torch.cuda.Event()
            copied.record(self.stream)
        return batch, copied

    def close(self) -> None:
        """Stop the worker (a prepared batch nobody asked for is dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _used_by(tensor: torch.Tensor, stream: Any) -> torch.Tensor:
    tensor.record_stream(stream)
    return tensor
