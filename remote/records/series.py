"""Per-step rows of a recorded run: every rank's step events joined by step number.

A relaunched run redoes the steps after its checkpoint; the later values of a step replace the
earlier ones, so each step appears once, as it finally ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from remote.records.history import Recorded
from trainer.events import EVAL_METRICS, StartEvent, StepEvent


@dataclass
class RankCell:
    """One rank's part of one step."""

    local_batch: int
    compute_s: float
    step_s: float


@dataclass
class StepRow:
    """One step over all ranks."""

    step: int
    t: float = 0.0
    loss: float | None = None
    """Rank 0's global loss (its local loss when the global one is missing)."""
    cluster_samples_per_s: float | None = None
    step_s: float = 0.0
    """Rank 0's step wall time."""
    lr: float | None = None
    declared_batch: int | None = None
    ranks: dict[int, RankCell] = field(default_factory=dict)

    @property
    def global_batch(self) -> int:
        """Samples in this step: the run's global batch, else the ranks' local batches."""
        if self.declared_batch:
            return self.declared_batch
        return sum(cell.local_batch for cell in self.ranks.values())

    @property
    def max_compute_s(self) -> float:
        """The slowest rank's compute time: what the step waits for."""
        return max((cell.compute_s for cell in self.ranks.values()), default=0.0)

    @property
    def ideal_samples_per_s(self) -> float | None:
        """Σ ranks' ``local_batch / compute_s``: the throughput with no rank waiting."""
        rates = [c.local_batch / c.compute_s for c in self.ranks.values() if c.compute_s > 0]
        return sum(rates) if rates else None


def collect_steps(lines: list[Recorded]) -> dict[int, StepRow]:
    """Every step of the run in step order, each as it last ran."""
    step_rows: dict[int, StepRow] = {}
    global_batch: int | None = None
    for line in lines:
        event = line.event
        if isinstance(event, StartEvent):
            global_batch = event.global_batch
            continue
        if not isinstance(event, StepEvent):
            continue
        row = step_rows.setdefault(event.step, StepRow(step=event.step))
        row.declared_batch = global_batch
        row.ranks[event.rank] = RankCell(local_batch=event.local_batch,
                                         compute_s=event.compute_s, step_s=event.step_s)
        if event.rank != 0:
            continue
        row.t, row.step_s = event.t, event.step_s
        row.loss = event.global_loss if event.global_loss is not None else event.loss
        row.cluster_samples_per_s = event.cluster_samples_per_s
        if row.cluster_samples_per_s is None and event.step_s > 0 and global_batch:
            row.cluster_samples_per_s = global_batch / event.step_s
        lr = line.data.get("lr")
        row.lr = float(lr) if isinstance(lr, int | float) else None
    return dict(sorted(step_rows.items()))


@dataclass(frozen=True)
class RunSeries:
    """Per-step values for plots: loss, throughput (with its ideal) and each rank's share."""

    steps: list[int]
    loss: list[float | None]
    samples_per_s: list[float | None]
    ideal: list[float | None]
    shares: dict[int, list[float | None]]
    """Per rank: its part of the global batch at each step."""
    eval: dict[str, list[tuple[int, float]]]
    """Per eval metric: (step, value) points."""

    @classmethod
    def from_steps(cls, step_rows: dict[int, StepRow], lines: list[Recorded]) -> RunSeries:
        """The series of ``step_rows`` (and of the ``eval`` lines among ``lines``)."""
        ranks = sorted({r for row in step_rows.values() for r in row.ranks})
        shares: dict[int, list[float | None]] = {r: [] for r in ranks}
        for row in step_rows.values():
            total = row.global_batch
            for rank in ranks:
                cell = row.ranks.get(rank)
                shares[rank].append(cell.local_batch / total if cell and total else None)
        evals: dict[str, list[tuple[int, float]]] = {}
        for line in lines:
            step = line.data.get("step")
            if line.kind != "eval" or line.rank != 0 or not isinstance(step, int):
                continue
            for key in EVAL_METRICS:
                value = line.data.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    evals.setdefault(key, []).append((step, float(value)))
        return cls(steps=list(step_rows), loss=[r.loss for r in step_rows.values()],
                   samples_per_s=[r.cluster_samples_per_s for r in step_rows.values()],
                   ideal=[r.ideal_samples_per_s for r in step_rows.values()], shares=shares,
                   eval=evals)
