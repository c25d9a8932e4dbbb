"""One round's exchange between islands, started and later waited for (``Sending``).

The island leader hands its sample-weighted change to one torch.distributed collective over
the leaders' group: an all-reduce of the float32 change (``outer_compression = "none"``) or an
all-gather of the quantised payloads (trainer/lowcomm/compress.py). With ``outer_overlap`` the
collective is started with ``async_op=True`` and runs (in the backend's own threads) while the
island computes the next round; ``Sending.wait`` finishes it: the leader sums the gathered
payloads in island order and the island's other ranks take the leader's result by a broadcast
in the island's group. Every rank of an island calls ``wait`` at the same point of the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from trainer.lowcomm.compress import ErrorFeedback, gathered_sum, payload_of
from trainer.lowcomm.sizes import BITS, Compression


class Sending:
    """An exchange under way (or finished: ``settled``)."""

    def __init__(self, work: Any, finish: Callable[[], torch.Tensor], sent: int) -> None:
        self.work, self.finish = work, finish
        self.sent = sent
        """Bytes this rank handed to the collective to send (0 off the leaders' group)."""
        self.started = time.perf_counter()
        self.in_flight_s: float | None = None
        """Seconds from the start until the collective was first seen complete."""
        self.result: torch.Tensor | None = None

    @classmethod
    def settled(cls, change: torch.Tensor) -> Sending:
        """An exchange whose average is known (a checkpoint's pending change)."""
        done = cls(None, lambda: change, 0)
        done.in_flight_s, done.result = 0.0, change
        return done

    def poll(self) -> None:
        """Note the time the collective completed, if it has (called between inner steps)."""
        if self.in_flight_s is None and (self.work is None or self.work.is_completed()):
            self.in_flight_s = time.perf_counter() - self.started

    def wait(self) -> torch.Tensor:
        """The islands' averaged change, the same on every rank (collective in the island the
        first time)."""
        if self.result is None:
            if self.work is not None:
                self.work.wait()
            self.poll()
            self.result = self.finish()
        return self.result


def start(change: torch.Tensor, groups: Any, compression: Compression,
          feedback: ErrorFeedback | None, overlap: bool) -> Sending:
    """Start the exchange of this rank's island's weighted ``change`` (every rank calls it;
    ``groups`` is trainer/lowcomm/outer.py's ``IslandGroups``)."""
    work, sent = None, 0
    leaders = groups.leaders if groups.is_leader else None
    gathered: list[torch.Tensor] = []
    if leaders is not None and compression == "none":
        work = dist.all_reduce(change, group=leaders, async_op=overlap)
        n = len(groups.islands)
        sent = int(2 * (n - 1) / n * change.numel() * change.element_size())
    elif leaders is not None:
        assert feedback is not None
        payload = payload_of(feedback.quantise(change, BITS[compression]))
        gathered = [torch.empty_like(payload) for _ in groups.islands]
        work = dist.all_gather(gathered, payload, group=leaders, async_op=overlap)
        sent = (len(groups.islands) - 1) * payload.numel() * payload.element_size()
    elif groups.is_leader and compression != "none":
        assert feedback is not None  # one island: quantised all the same (the same result)
        payload = payload_of(feedback.quantise(change, BITS[compression]))
        gathered = [payload]
    numel = change.numel()

    def finish() -> torch.Tensor:
        total = change
        if gathered:
            total = gathered_sum(gathered, numel, BITS[compression])
        if groups.group is not None:  # the island's ranks take their leader's average
            dist.broadcast(total, src=groups.leader, group=groups.group)
        return total

    return Sending(work if overlap else None, finish, sent)
