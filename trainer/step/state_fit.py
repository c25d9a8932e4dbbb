"""Whether a run's training state fits its ranks' memory budgets, worked out before it starts
(``corral check``, ``corral run --dry-run``; trainer/step/shards.py holds the state itself).

Training state per rank, in bytes, from the trained parameters' bytes ``P`` (fp32: corral's
parameters are the master weights) and the optimizer's per-element copies ``k`` (AdamW: its two
moments, 2; SGD: its momentum buffer, 1, or 0 without momentum):

- ``replicate`` (DDP): every rank ``(2 + k)·P`` — parameters, gradients, optimizer state;
- ``optimizer`` (ZeRO 1): ``2·P + k·P·bᵣ/Σb`` — the parameters and the flat gradient whole (the
  backward writes every element of it), the optimizer state of the rank's slice, which is
  sized by its budget ``bᵣ``;
- ``gradients`` (ZeRO 2): ``P + (1 + k)·P·bᵣ/Σb`` — the parameters whole, the gradient and the
  optimizer state of the rank's slice (the backward's buckets are reduced and freed as they
  fill: a few tens of MB in flight, trainer/step/grad_buckets.py; a rank running several
  passes a step holds its whole gradient until its last one).

Activations are not counted (they depend on the micro-batch and are what a profile's memory cap
bounds): a run refused here cannot fit; one accepted may still need a smaller micro-batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GIB = 1024 ** 3
SHARD_STATES = ("replicate", "optimizer", "gradients")


def optimizer_copies(optimizer: str, momentum: float) -> int:
    """Per-element tensors the optimizer keeps per parameter: AdamW 2, SGD 1 with momentum,
    0 without."""
    if optimizer == "adamw":
        return 2
    return 1 if momentum > 0 else 0


@dataclass(frozen=True, kw_only=True)
class RankFit:
    """One rank's budget and the training state it would hold (bytes)."""

    rank: int
    host: str
    budget: float
    state: float

    @property
    def short(self) -> float:
        """Bytes the state exceeds the budget by (0 when it fits)."""
        return max(0.0, self.state - self.budget)


@dataclass(frozen=True, kw_only=True)
class StateFit:
    """Every rank's fit under one ``shard_state``."""

    shard_state: str
    ranks: tuple[RankFit, ...]

    @property
    def fits(self) -> bool:
        """True when every rank's state is within its budget."""
        return all(r.short == 0 for r in self.ranks)

    @property
    def worst(self) -> RankFit:
        """The rank short by the most (the first, when all fit)."""
        return max(self.ranks, key=lambda r: r.short)


def rank_state_bytes(parameter_bytes: float, copies: int, shard_state: str,
                     budgets: Sequence[float]) -> tuple[float, ...]:
    """Each rank's training state in bytes under ``shard_state`` (see the module); its slice
    in proportion to ``budgets`` (bytes, in rank order). ValueError on an unknown state."""
    if shard_state not in SHARD_STATES:
        raise ValueError(f"shard_state must be one of {SHARD_STATES}, got {shard_state!r}")
    if shard_state == "replicate":
        return tuple((2 + copies) * parameter_bytes for _ in budgets)
    whole = sum(budgets)
    replicated, sharded = (2, copies) if shard_state == "optimizer" else (1, 1 + copies)
    return tuple(replicated * parameter_bytes
                 + sharded * parameter_bytes * (b / whole if whole else 0) for b in budgets)


def state_fit(parameter_bytes: float, copies: int, shard_state: str,
              budgets: Sequence[tuple[str, float]]) -> StateFit:
    """The fit of every rank, ``budgets`` being ``(host, bytes)`` per rank in rank order."""
    states = rank_state_bytes(parameter_bytes, copies, shard_state, [b for _, b in budgets])
    return StateFit(shard_state=shard_state, ranks=tuple(
        RankFit(rank=r, host=host, budget=budget, state=state)
        for r, ((host, budget), state) in enumerate(zip(budgets, states, strict=True))))


def gib(value: float) -> str:
    """Bytes as GiB for people (``1.25 GiB``)."""
    return f"{value / GIB:.3g} GiB"


def refusal(parameter_bytes: float, copies: int, shard_state: str,
            budgets: Sequence[tuple[str, float]], shared: Sequence[str] = ()) -> str | None:
    """Why the run's state cannot fit, naming the rank, by how much and the settings that
    would change it; None when it fits. ``shared``: hosts whose ranks share one measured
    memory (fewer ranks there gives each more)."""
    fit = state_fit(parameter_bytes, copies, shard_state, budgets)
    if fit.fits:
        return None
    worst = fit.worst
    text = (f"rank {worst.rank} (host {worst.host!r}) would hold {gib(worst.state)} of "
            f"training state under shard_state = \"{shard_state}\" with a budget of "
            f"{gib(worst.budget)}: {gib(worst.short)} short")
    others = [s for s in SHARD_STATES[1:] if s != shard_state]
    fitting = [s for s in others if state_fit(parameter_bytes, copies, s, budgets).fits]
    if fitting:
        return text + f"; shard_state = \"{fitting[0]}\" fits"
    if worst.budget < parameter_bytes:
        text += (f"; sharded or not, every rank holds the parameters whole "
                 f"({gib(parameter_bytes)}: parameters are not sharded yet)")
    fixes = [f"raise state_budget of host {worst.host!r} if it has more"]
    if worst.host in shared:
        fixes.append(f"start fewer ranks on host {worst.host!r} (nproc): its ranks share its "
                     "memory")
    fixes.append("leave out that host or train a smaller model")
    return text + "; " + ", or ".join(fixes)
