"""What a step leaves: the records a finished step hands on.

``TimedStep`` is a finished step as the next step's tally reports it, ``StepDone`` what one
step measured (``Trainer.train_step`` hands it to the report and the balancer), and
``RunProgress`` what changes as the run goes (its step, split, newest checkpoint, stop flag and
the step just timed). The step's tally itself (what every rank sends) is trainer/step/tally.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from trainer.step.optim import StepOutcome
from trainer.step.tally import ComputeTime, StepTally


class TimedStep(NamedTuple):
    """A finished step as this rank's next step reports it: its tally carries the exchange
    seconds (and, on a GPU, the compute time) of the step before, and rank 0's balancer pairs
    them with that step's split."""

    step: int
    split: tuple[int, ...]
    """Every rank's share of the step."""
    compute: ComputeTime
    """This rank's compute time of it."""
    exchange_s: float
    """This rank's wall seconds in its gradient exchange after its own compute (0: not
    measured; trainer/step/accumulate.py)."""


@dataclass(frozen=True)
class StepDone:
    """What one step measured, handed from ``Trainer.train_step`` to its report and the
    balancer in one record (nothing arrives by a side effect)."""

    tallies: list[StepTally]
    """Every rank's tally of the step, by rank (the same on every rank)."""
    outcome: StepOutcome
    """What the optimizer did."""
    compute_s: float
    """This rank's compute seconds of the step (a GPU's read after the tally, which completed
    its events: no wait)."""
    timed_before: TimedStep | None
    """The step before, whose exchange seconds (and GPU compute times) these tallies carry
    (``trainer/step/tally.py``); None for the first step this process ran."""


@dataclass
class RunProgress:
    """What changes as the run goes, in one place (the end event reads it too)."""

    total_steps: int
    """The step the run ends at."""
    step: int = 0
    """Optimizer steps completed. Steps are numbered from 1: the next step is ``step + 1``."""
    split: tuple[int, ...] = ()
    """Every rank's local batch for the next step."""
    checkpoint: str | None = None
    """The newest checkpoint written or resumed from."""
    checkpoint_step: int | None = None
    """The step that checkpoint holds."""
    stopping: bool = False
    """Some rank was signalled: every rank stops after the current step."""
    left: bool = False
    """This rank's host left the run at a step boundary (live membership): it ends here."""
    last_timed: TimedStep | None = None
    """The step just run, as the next step's tally reports it: its split, this rank's compute
    and exchange seconds (None before this process ran a step; trainer/step/tally.py)."""
