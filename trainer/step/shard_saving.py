"""The sharded optimizer state in checkpoints: saved whole, in the layout a replicated run saves
(what ``torch.optim`` over every trained parameter gives), and re-sliced on load.

So a checkpoint does not depend on how the state was split: a run resumes on the same ranks or
on others with other budgets, sharded or replicated, and a replicated run's checkpoint resumes
sharded. The price: rank 0 holds the whole optimizer state while it writes (a checkpoint is one
file written by rank 0), received slice by slice from each owner (point to point).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from trainer.step.shards import ShardedState

OptimizerState = dict[str, Any]
"""``torch.optim.Optimizer.state_dict()``'s layout: ``state`` (index -> name -> value) and
``param_groups``."""


class ShardedOptimizer:
    """This rank's optimizer over its slice, seen whole by checkpoints."""

    def __init__(self, shards: ShardedState, optimizer: torch.optim.Optimizer) -> None:
        self.shards, self.optimizer = shards, optimizer

    def _slice_state(self) -> dict[str, Any]:
        return dict(self.optimizer.state.get(self.shards.master, {}))

    def gathered(self) -> OptimizerState | None:
        """The whole state on rank 0, in the replicated layout, on the CPU; None elsewhere
        (collective over the world: every owner sends its slice to rank 0)."""
        shards, own = self.shards, self._slice_state()
        per_element = sorted(k for k, v in own.items()
                             if isinstance(v, torch.Tensor) and v.dim() == 1)
        whole = {key: self._gather(own[key]) for key in per_element}
        if shards.rank != 0:
            return None
        group = self.optimizer.state_dict()["param_groups"][0]
        state: dict[int, dict[str, Any]] = {}
        offset = 0
        for index, p in enumerate(shards.parameters):
            n = p.numel()
            if own:
                entry = {k: (v.clone() if isinstance(v, torch.Tensor) else v)
                         for k, v in own.items() if k not in whole}
                entry.update({k: flat[offset:offset + n].view(p.shape).clone()
                              for k, flat in whole.items()})
                state[index] = entry
            offset += n
        return {"state": state, "param_groups": [
            {**group, "params": list(range(len(shards.parameters)))}]}

    def _gather(self, mine: torch.Tensor) -> torch.Tensor:
        """Every owner's slice of a per-element state on rank 0 (a CPU vector; elsewhere an
        empty one)."""
        shards = self.shards
        whole = torch.empty(shards.flat.numel() if shards.rank == 0 else 0, dtype=mine.dtype)
        on_device = dist.get_backend() == "nccl"  # NCCL sends device tensors; gloo CPU ones
        for owner, (lo, hi) in enumerate(shards.bounds):
            if hi == lo:
                continue
            if owner == shards.rank == 0:
                whole[lo:hi] = mine.cpu()
            elif shards.rank == owner:
                dist.send(mine if on_device else mine.cpu(), dst=0)
            elif shards.rank == 0:
                received = torch.empty(hi - lo, dtype=mine.dtype,
                                       device=mine.device if on_device else "cpu")
                dist.recv(received, src=owner)
                whole[lo:hi] = received.cpu()
        return whole

    def state_dict(self) -> OptimizerState:
        """This rank's own slice's state (torch's layout, one parameter)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, whole: OptimizerState) -> None:
        """Load a checkpoint's whole state (``gathered``'s layout, or a replicated run's): this
        rank's slice of every per-element state, the rest (the step count) as saved."""
        shards = self.shards
        params, (lo, hi) = shards.parameters, shards.bounds[shards.rank]
        saved = whole["state"]
        group = {**whole["param_groups"][0], "params": [0]}
        if not saved:
            self.optimizer.load_state_dict({"state": {}, "param_groups": [group]})
            return
        first = next(iter(saved.values()))
        per_element = [k for k, v in first.items()
                       if isinstance(v, torch.Tensor) and v.dim() > 0]
        own: dict[str, Any] = {k: v for k, v in first.items() if k not in per_element}
        for key in per_element:
            pieces, offset = [], 0
            for index, p in enumerate(params):
                n = p.numel()
                a, b = max(lo, offset), min(hi, offset + n)
                if a < b:
                    value = saved.get(index, {}).get(key)
                    flat = (value.reshape(-1) if value is not None
                            else torch.zeros(n, dtype=p.dtype))
                    pieces.append(flat[a - offset:b - offset].to(p.device))
                offset += n
            own[key] = (torch.cat(pieces) if pieces
                        else torch.zeros(0, dtype=shards.flat.dtype, device=shards.flat.device))
        self.optimizer.load_state_dict({"state": {0: own}, "param_groups": [group]})

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As ``torch.optim.Optimizer.zero_grad`` (the slice's gradient)."""
        self.optimizer.zero_grad(set_to_none=set_to_none)
