"""The exchanges of a low-communication run, all through torch.distributed's collectives.

Two kinds of process group: one per island of several ranks (the exact gradient all-reduce of
every inner step, and the broadcast of the outer update from the island's leader), and one of
the island leaders (the outer all-reduce of the parameter changes, once per round: the only
traffic between islands).

The outer step (DiLoCo's): every island's change since the round's anchor, ``anchor - θ``, is
averaged over islands weighted by the samples each trained on in the round, and the average is
the gradient of one SGD step with Nesterov momentum on the anchor; every rank then starts the
next round from the new anchor. An island with no step in a round contributes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from trainer.lowcomm.compress import ErrorFeedback
from trainer.lowcomm.exchange import Sending, start
from trainer.lowcomm.sizes import Compression, sent_bytes


class IslandGroups:
    """This rank's island, its group and the leaders' group (made collectively, in the same
    order on every rank)."""

    def __init__(self, islands: Sequence[Sequence[int]], rank: int) -> None:
        self.islands = tuple(tuple(ranks) for ranks in islands)
        self.index = next(i for i, ranks in enumerate(self.islands) if rank in ranks)
        self.ranks = self.islands[self.index]
        self.leader = self.ranks[0]
        self.is_leader = rank == self.leader
        self.island_rank = self.ranks.index(rank)
        self.group: Any = None
        for ranks in self.islands:  # every rank makes every group (new_group is collective)
            group = dist.new_group(list(ranks)) if len(ranks) > 1 else None
            if rank in ranks:
                self.group = group
        leaders = [ranks[0] for ranks in self.islands]
        made = dist.new_group(leaders) if len(leaders) > 1 else None
        self.leaders: Any = made if self.is_leader else None

    def sum_in_island(self, flat: torch.Tensor) -> None:
        """Sum ``flat`` over this island's ranks, in place (nothing alone)."""
        if self.group is not None:
            dist.all_reduce(flat, group=self.group)


def flat_grads(parameters: Sequence[nn.Parameter], units: float) -> torch.Tensor:
    """The parameters' gradients (zeros where none) and ``units``, as one float32 vector."""
    parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
             for p in parameters]
    parts.append(torch.tensor([units], dtype=torch.float32, device=parts[0].device))
    return torch.cat(parts)


def unflatten_grads(parameters: Sequence[nn.Parameter], flat: torch.Tensor) -> float:
    """Write ``flat_grads``'s layout back into ``.grad``; returns the units entry."""
    offset = 0
    for p in parameters:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype).clone()
        offset += n
    return float(flat[offset])


class OuterStep:
    """The anchor, the outer optimizer and the round's exchange (see the module).

    ``compression``: the exchange's payload (trainer/lowcomm/compress.py; this island's error
    feedback lives here). ``overlap``: the exchange of round k is started at its end and its
    average reaches the anchor at the end of round k+1 (``pending`` meanwhile). Round k+1
    does not wait for it: each island starts from an *eager* estimate of the outer step, the
    anchor moved by its own fresh change plus the other islands' changes of the round before
    (Eager DiLoCo's estimate), and the anchor itself only ever takes the true averages, so
    the estimate's error is corrected when the average arrives. The islands' start points
    then differ (``start``); the anchor is the same everywhere."""

    def __init__(self, parameters: Sequence[nn.Parameter], groups: IslandGroups, *,
                 lr: float, momentum: float, compression: Compression = "none",
                 overlap: bool = False) -> None:
        self.parameters, self.groups = list(parameters), groups
        self.anchor = [nn.Parameter(p.detach().clone().float()) for p in self.parameters]
        self.optimizer = torch.optim.SGD(self.anchor, lr=lr, momentum=momentum,
                                         nesterov=momentum > 0)
        self.numel = sum(p.numel() for p in self.parameters)
        self.compression, self.overlap = compression, overlap
        self.feedback = (ErrorFeedback(self.numel, self.anchor[0].device)
                         if compression != "none" and groups.is_leader else None)
        self.pending: Sending | None = None
        self.own: torch.Tensor | None = None
        """This island's weighted change in ``pending`` (the others' part is the average
        less it)."""
        self.start: torch.Tensor | None = None
        """The island's start of the round under way where it is not the anchor (eager)."""
        self.sent = 0
        """Bytes this rank handed to the last exchange's collective."""

    def step(self, samples: Sequence[int], *, final: bool = True) -> Sending:
        """The round's end: start the exchange of the islands' changes weighted by
        ``samples`` (each island's samples this round, the same list on every rank) and take
        the outer step with this round's average; with overlap, take the last round's into
        the anchor and start the next round from the eager estimate (every average waited
        for and taken when ``final``). Returns this round's exchange."""
        total = sum(samples)
        base = self.start if self.start is not None else _flat(self.anchor)
        change = base - _flat(self.parameters)
        mine = change * (samples[self.groups.index] / total if total else 0.0)
        sending = start(mine.clone(), self.groups, self.compression, self.feedback,
                        self.overlap)
        self.sent = sending.sent
        if not self.overlap:
            self._apply(sending.wait())
            return sending
        earlier, own, self.pending, self.own = self.pending, self.own, sending, mine
        others = None
        if earlier is not None:
            arrived = earlier.wait()
            self._apply(arrived, reset=False)
            others = arrived - own if own is not None else None
        if final:
            self._apply(sending.wait())
            self.pending = self.own = self.start = None
            return sending
        # The outer step as if the others had changed as in the last round (or, in the
        # first overlapped round, as this island did), previewed on a copy of the momentum.
        self.start = self._preview(mine + others if others is not None else change)
        self._set_parameters(self.start)
        return sending

    def _preview(self, change: torch.Tensor) -> torch.Tensor:
        """The anchor after one outer step with ``change``, the outer state untouched (the
        SGD-with-Nesterov-momentum update torch's ``SGD`` makes)."""
        group = self.optimizer.param_groups[0]
        lr, mu = group["lr"], group["momentum"]
        out, offset = [], 0
        for anchor in self.anchor:
            n = anchor.numel()
            g = change[offset:offset + n].view_as(anchor)
            offset += n
            buf = self.optimizer.state.get(anchor, {}).get("momentum_buffer")
            if mu > 0:
                moved = g if buf is None else buf * mu + g
                g = g + mu * moved
            out.append((anchor.detach() - lr * g).reshape(-1))
        return torch.cat(out)

    def silence(self) -> None:
        """This island sends nothing this round (weight 0, outside the round or dropped from
        its average): its residual is dropped first, as a leaving island's is."""
        if self.feedback is not None:
            self.feedback.residual.zero_()

    def regroup(self, groups: IslandGroups) -> None:
        """A new membership generation's islands (live membership): this island keeps its
        residual; an island's new leader starts one at zero."""
        self.groups = groups
        if self.compression == "none" or not groups.is_leader:
            self.feedback = None
        elif self.feedback is None:
            self.feedback = ErrorFeedback(self.numel, self.anchor[0].device)

    def settle(self) -> None:
        """Wait for the pending exchange (collective in the island; before a checkpoint)."""
        if self.pending is not None:
            self.pending.wait()

    def _apply(self, change: torch.Tensor, *, reset: bool = True) -> None:
        """One outer step with the islands' averaged ``change``; every rank to the anchor
        unless not ``reset``."""
        offset = 0
        for anchor in self.anchor:
            n = anchor.numel()
            anchor.grad = change[offset:offset + n].view_as(anchor).clone()
            offset += n
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if reset:
            self.reset_parameters()

    def _set_parameters(self, flat: torch.Tensor) -> None:
        """Every trained parameter from ``flat`` (``_flat``'s layout)."""
        offset = 0
        with torch.no_grad():
            for p in self.parameters:
                n = p.numel()
                p.copy_(flat[offset:offset + n].view_as(p).to(p.dtype))
                offset += n

    def reset_parameters(self) -> None:
        """Every trained parameter set to the anchor."""
        with torch.no_grad():
            for anchor, p in zip(self.anchor, self.parameters, strict=True):
                p.copy_(anchor.to(p.dtype))

    def exchanged_bytes(self) -> int:
        """Bytes one island leader sends in one round's exchange (``compress.sent_bytes``)."""
        return sent_bytes(self.numel, self.compression, len(self.groups.islands))

    def state_dict(self) -> dict[str, Any]:
        """For checkpoints (after ``settle``): the outer momentum, the pending average and,
        while one is pending, the anchor (else it is the model at a round's end)."""
        pending = self.pending.wait().cpu() if self.pending is not None else None
        anchor = _flat(self.anchor).cpu() if pending is not None else None
        return {"optimizer": self.optimizer.state_dict(), "pending": pending, "anchor": anchor}

    def island_state(self) -> IslandOuterState:
        """This island's own outer state (checkpointed per island, from its leader)."""
        return IslandOuterState(
            residual=self.feedback.residual.cpu() if self.feedback is not None else None,
            own=self.own.cpu() if self.own is not None else None,
            start=self.start.cpu() if self.start is not None else None)

    def load_state_dict(self, state: dict[str, Any], device: torch.device,
                        island: IslandOuterState | None = None) -> None:
        """Restore after the model was loaded: the anchor (from the model unless saved),
        then the momentum, the pending average and this ``island``'s state (None: a
        residual at zero, and a pending average taken into the anchor now)."""
        island = island or IslandOuterState()
        saved_anchor = state.get("anchor")
        with torch.no_grad():
            if saved_anchor is not None:
                flat = saved_anchor.to(device)
                offset = 0
                for anchor in self.anchor:
                    anchor.copy_(flat[offset:offset + anchor.numel()].view_as(anchor))
                    offset += anchor.numel()
            else:
                for anchor, p in zip(self.anchor, self.parameters, strict=True):
                    anchor.copy_(p.detach().float())
        self.optimizer.load_state_dict(state["optimizer"])
        for value in self.optimizer.state.values():
            for key, tensor in value.items():
                if isinstance(tensor, torch.Tensor):
                    value[key] = tensor.to(device)
        pending = state.get("pending")
        self.pending = self.own = self.start = None
        if pending is not None and self.overlap and island.start is not None:
            self.pending = Sending.settled(pending.to(device))
            self.own = island.own.to(device) if island.own is not None else None
            self.start = island.start.to(device)
            self._set_parameters(self.start)
        elif pending is not None:  # overlap off, or islands regrouped: the average taken now
            self._apply(pending.to(device))
        if self.feedback is not None and island.residual is not None:
            self.feedback.residual = island.residual.to(device)


@dataclass(frozen=True)
class IslandOuterState:
    """What a checkpoint keeps of one island's outer state."""

    residual: torch.Tensor | None = None
    """Its error-feedback residual (``outer_compression``)."""
    own: torch.Tensor | None = None
    """``outer_overlap``: its own weighted change in the exchange still pending."""
    start: torch.Tensor | None = None
    """``outer_overlap``: where it started the round after the checkpoint (its eager
    estimate), flat float32."""


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The tensors as one flat float32 vector (detached)."""
    return torch.cat([t.detach().float().reshape(-1) for t in tensors])
