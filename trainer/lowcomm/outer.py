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
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


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
    """The anchor, the outer optimizer and the round's exchange (see the module)."""

    def __init__(self, parameters: Sequence[nn.Parameter], groups: IslandGroups, *,
                 lr: float, momentum: float) -> None:
        self.parameters, self.groups = list(parameters), groups
        self.anchor = [nn.Parameter(p.detach().clone().float()) for p in self.parameters]
        self.optimizer = torch.optim.SGD(self.anchor, lr=lr, momentum=momentum,
                                         nesterov=momentum > 0)
        self.numel = sum(p.numel() for p in self.parameters)

    def step(self, samples: Sequence[int]) -> None:
        """Average the islands' changes weighted by ``samples`` (each island's samples this
        round, the same list on every rank), take the outer step, and start every rank from
        the new anchor (collective over the world)."""
        total = sum(samples)
        change = torch.cat([(a.detach() - p.detach().float()).reshape(-1)
                            for a, p in zip(self.anchor, self.parameters, strict=True)])
        groups = self.groups
        if groups.is_leader:
            change.mul_(samples[groups.index] / total if total else 0.0)
            if groups.leaders is not None:
                dist.all_reduce(change, group=groups.leaders)
        if groups.group is not None:  # the island's ranks take their leader's average
            dist.broadcast(change, src=groups.leader, group=groups.group)
        offset = 0
        for anchor in self.anchor:
            n = anchor.numel()
            anchor.grad = change[offset:offset + n].view_as(anchor).clone()
            offset += n
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every trained parameter set to the anchor."""
        with torch.no_grad():
            for anchor, p in zip(self.anchor, self.parameters, strict=True):
                p.copy_(anchor.to(p.dtype))

    def exchanged_bytes(self) -> int:
        """Bytes one island leader sends in one round's ring all-reduce (float32 changes)."""
        n = len(self.groups.islands)
        return 0 if n < 2 else int(2 * (n - 1) / n * self.numel * 4)

    def state_dict(self) -> dict[str, Any]:
        """For checkpoints: the outer momentum (the anchor is the model at a round's end)."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        """Restore after the model was loaded: the anchor from the model, then the momentum."""
        with torch.no_grad():
            for anchor, p in zip(self.anchor, self.parameters, strict=True):
                anchor.copy_(p.detach().float())
        self.optimizer.load_state_dict(state["optimizer"])
        for value in self.optimizer.state.values():
            for key, tensor in value.items():
                if isinstance(tensor, torch.Tensor):
                    value[key] = tensor.to(device)
