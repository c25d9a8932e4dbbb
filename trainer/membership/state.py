"""The training state sent in a new generation: one rank's checkpoint content (the
checkpointer's own serialization, ``Checkpointer.state``: parameters, optimizer and training
state, step, RNG) as one byte tensor broadcast over the new group, loaded by the others as a
resume loads a checkpoint (``restore``). Only the ranks that need it (a joiner; a survivor
that saw a loss a step earlier than the sender) load it; it is sent once to all.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from trainer.dist import broadcast_ints


def broadcast_state(state: Callable[[], dict[str, Any]], source: int, rank: int,
                    device: torch.device) -> tuple[int, dict[str, Any] | None]:
    """Rank ``source``'s ``state()`` on every rank of the group: ``(bytes sent, the state)``,
    the state None on ``source`` itself. Collective."""
    data = torch.empty(0, dtype=torch.uint8)
    if rank == source:
        buffer = io.BytesIO()
        torch.save(state(), buffer)
        data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    (size,) = broadcast_ints([data.numel()], device, src=source)
    on_device = data.to(device) if rank == source else torch.empty(size, dtype=torch.uint8,
                                                                    device=device)
    dist.broadcast(on_device, src=source)
    if rank == source:
        return size, None
    received = io.BytesIO(on_device.cpu().numpy().tobytes())
    return size, torch.load(received, map_location=device, weights_only=False)
