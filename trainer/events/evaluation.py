"""What the trained model does in events: ``eval`` (the held-out set) and ``samples`` (its
generations) (docs/events.md)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

EVAL_METRICS = ("loss", "accuracy", "perplexity")
"""The metric fields an ``eval`` event has always carried (read from files written before
``metrics``, which holds every metric, these included)."""
LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error")
"""Eval metrics whose name contains one of these are best when lowest (others when highest)."""


@dataclass(frozen=True, kw_only=True)
class EvalEvent:
    """Rank 0: the held-out set was evaluated after ``step`` (sharded over the ranks)."""

    kind: ClassVar[str] = "eval"
    t: float
    rank: int
    step: int
    """The step the evaluated parameters come from."""
    samples: int
    """Held-out items evaluated."""
    units: int
    """Loss units among them (images, or target tokens)."""
    loss: float | None
    """Mean held-out loss per unit."""
    accuracy: float | None = None
    """Fraction of correct predictions (classification tasks), else None."""
    perplexity: float | None = None
    """``exp(loss)`` for language models (tasks that count no correct predictions)."""
    eval_s: float = 0.0
    """Wall seconds the evaluation took (from rank 0's view)."""
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    """Every metric by name: each sum the task's ``evaluate`` returned divided by the unit
    count (``loss_sum`` as ``loss``, ``correct`` as ``accuracy``), and ``perplexity``. Empty
    in files written before it existed: ``all_metrics`` reads ``loss``, ``accuracy`` and
    ``perplexity`` from their fields then."""

    def all_metrics(self) -> dict[str, float]:
        """Every metric of this evaluation by name (None values left out)."""
        if self.metrics:
            return dict(self.metrics)
        values = {name: getattr(self, name) for name in EVAL_METRICS}
        return {name: float(v) for name, v in values.items() if v is not None}


@dataclass(frozen=True, kw_only=True)
class SamplesEvent:
    """Rank 0, after the final result is written: greedy generations of the trained model
    from a few held-out prompts (tasks that generate text)."""

    kind: ClassVar[str] = "samples"
    t: float
    rank: int
    step: int
    prompts: tuple[str, ...]
    outputs: tuple[str, ...]
    """The text generated after each prompt (same order)."""
