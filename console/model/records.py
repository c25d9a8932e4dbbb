"""The records the console's run model is made of: ranks, rows, points, log lines.

Plain dataclasses with no behaviour beyond small derived values; ``console.model.run`` fills
them from the run's events and the renderers (the console's panels, the headless follower) read
them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

SPARK_POINTS = 40
"""Per-rank throughput samples kept for the sparklines."""


@dataclass
class RankRow:
    """Everything known about one rank (kept after it dies, greyed out with the reason)."""

    rank: int
    host: str
    device: str = ""
    backend: str = ""
    local_batch: int | None = None
    step: int = 0
    loss: float | None = None
    samples_per_s: float | None = None
    compute_s: float | None = None
    step_s: float | None = None
    tokens: float | None = None
    """Its tokens per step when the run shares tokens (variable-length items): the latest
    step's while it runs, the run's mean (``RankFigures.mean_tokens_per_step``) once ended."""
    gpu_util: float | None = None
    """GPU (SM) utilisation, percent: the latest sample's while the run goes, the run's mean
    (``RankFigures.gpu_util``) once it ended."""
    gpu_mem_used: int | None = None
    gpu_mem_total: int | None = None
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    gpu_peak_allocated: int | None = None
    """The most bytes its tensors held on its GPU so far (``RankFigures``)."""
    gpu_peak_reserved: int | None = None
    """The most bytes torch's allocator reserved on its GPU for it so far."""
    end_status: str | None = None
    reason: str = ""
    history: deque[float] = field(default_factory=lambda: deque(maxlen=SPARK_POINTS))

    @property
    def compute_share(self) -> float | None:
        """Fraction of the step spent computing (the rest is waiting for the others)."""
        if self.compute_s is None or not self.step_s:
            return None
        return max(0.0, min(1.0, self.compute_s / self.step_s))


@dataclass(frozen=True)
class RowView:
    """One line of the hosts panel: a rank, or a host whose ranks are not known yet."""

    host: str
    rank_row: RankRow | None
    """The rank's record (None: a host whose ranks are not known yet)."""
    status: str
    stale: bool
    """Show greyed out: the host or rank is dead; the values are the last ones known."""
    reason: str


@dataclass(frozen=True)
class ThroughputPoint:
    """Cluster throughput at one step, with the ideal it is measured against."""

    step: int
    t: float
    samples_per_s: float
    ideal: float | None


class LogEntry(NamedTuple):
    """One log line, already prefixed with where it came from (a named tuple: a flood makes
    thousands a second)."""

    t: float
    source: str
    """``host:rank``, ``host:launcher`` or ``corral``."""
    text: str
    level: str = "info"
    """``info``, ``warning`` or ``error`` (colours the line)."""
    noise: bool = False
    """torch's chatter or a known warning (``LogLine.noise``): the panel hides it by default."""

    @property
    def line(self) -> str:
        return f"{self.source} {self.text}"


@dataclass
class HostInfo:
    """A host's latest lifecycle state and why."""

    state: str | None = None
    detail: str = ""
