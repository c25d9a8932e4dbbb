"""What rank 0 knows about one rank's speed: measured compute times and a fitted line.

``RankTimes`` collects one rank's ``(local batch, compute seconds)`` samples between two
decisions (the *window*), folds each window into a smoothed estimate per batch size (the
median of the window, blended with the earlier estimate), and fits ``t(b) = a + c·b`` through
those estimates by recency-weighted least squares. The line is anchored at the measurement for
the rank's current batch, so the model is exact where the rank runs now and the fit only
supplies the slope. When a fresh median differs from the estimate at the same batch by more
than the change tolerance (``CHANGE_TOLERANCE``, or three standard errors on noisy hardware),
the rank's speed changed: older estimates are dropped, and the old line, rescaled to the new
speed, stands in until a second batch size has been measured. A change that undoes the previous
one soon after is a jump between levels, and counts into the rank's drift as well.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from trainer.balance.solve import LinearFit

CHANGE_TOLERANCE = 0.2
"""Relative difference between a fresh time and its prediction that counts as a speed change."""
MAX_INTERCEPT_FRACTION = 0.75
"""The fitted fixed cost may explain at most this fraction of a rank's current time. It keeps a
noisy, nearly flat fit from predicting that a rank can take any number of extra samples."""
MIN_INTERCEPT_FRACTION = -1.0
"""The fitted fixed cost may be negative down to this fraction of a rank's current time. Where
time per sample grows with the batch (caches), the line through neighbouring batch sizes is
steeper than time/batch and meets the axis below zero; clamping it at zero would understate
what extra samples cost and overshoot. -1 allows a local slope up to twice time/batch."""
MAX_SLOPE_ERROR = 0.3
"""A fitted slope is used only when its standard error is below this fraction of it."""
RECENCY = 0.5
"""Weight factor per decision of age for an estimate in the least-squares fit."""
MAX_POINTS = 16
"""Batch sizes remembered per rank (the least recently measured is forgotten first)."""
WINDOW_LIMIT = 512
"""Samples kept per rank between two decisions."""
DRIFT_WEIGHT = 0.2
"""Weight of the newest window in the running mean square of window-to-window differences
(the first few windows are averaged evenly)."""
FLAP_CAP = 0.25
FLAP_DECISIONS = 6
"""A speed change that undoes the previous one within this many decisions is the rank's speed
jumping between levels (another process taking its core now and then), not a new speed: its
size counts into the drift too, so the dead-band widens instead of the split chasing each jump."""

TimedSample = tuple[int, float, bool]
"""(local batch, compute seconds, first step after this rank's batch changed)."""


@dataclass
class Point:
    """The smoothed compute time of one rank at one batch size."""

    seconds: float
    samples: int
    updated: int
    """Decision index of the newest window folded in (for recency weights)."""
    error: float = 0.0
    """Relative standard error of ``seconds`` (0.02 = ±2 %), from the windows' spread."""


def median_seconds(samples: list[TimedSample]) -> float:
    """Median seconds, leaving out first steps after a batch change when other samples exist
    (a new shape often pays a one-off warm-up)."""
    return window_stats(samples)[0]


def window_stats(samples: list[TimedSample]) -> tuple[float, float | None]:
    """Median seconds and its relative standard error (None with under 3 samples).

    The error comes from the median absolute deviation, which a few outlier steps (another
    process grabbing the core) barely move: σ ≈ 1.4826·MAD and the median's standard error is
    about 1.2533·σ/√n.
    """
    settled = [t for _, t, first in samples if not first]
    times = settled or [t for _, t, _ in samples]
    m = statistics.median(times)
    if len(times) < 3 or m <= 0:
        return m, None
    mad = statistics.median(abs(t - m) for t in times)
    return m, 1.2533 * 1.4826 * mad / (m * math.sqrt(len(times)))


def least_squares(points: dict[int, Point], now: int) -> LinearFit | None:
    """Recency-weighted least-squares line through the estimates.

    None with under two batch sizes, or when the slope is not known to better than
    ``MAX_SLOPE_ERROR`` (estimates too close together for their noise): a wrong slope would
    send the solver far off, so the caller falls back to a safer shape.
    """
    if len(points) < 2:
        return None
    rows = [
        (b, p.seconds, p.error * p.seconds, min(p.samples, 10) * RECENCY ** (now - p.updated))
        for b, p in points.items()
    ]
    w_sum = sum(w for *_, w in rows)
    mean_b = sum(w * b for b, *_, w in rows) / w_sum
    mean_t = sum(w * t for _, t, _, w in rows) / w_sum
    s_bb = sum(w * (b - mean_b) ** 2 for b, *_, w in rows)
    if s_bb <= 0:
        return None
    slope = sum(w * (b - mean_b) * (t - mean_t) for b, t, _, w in rows) / s_bb
    # Propagate each estimate's standard error into the slope (weights are fixed numbers).
    slope_error = math.sqrt(sum((w * (b - mean_b) * e) ** 2 for b, _, e, w in rows)) / s_bb
    if slope <= 0 or slope_error > MAX_SLOPE_ERROR * slope:
        return None
    return LinearFit(mean_t - slope * mean_b, slope)


def _tolerance(*errors: float) -> float:
    """How far two estimates may differ before it counts as a change: ``CHANGE_TOLERANCE``, or
    three combined standard errors when the measurements are noisier than that."""
    return max(CHANGE_TOLERANCE, 3 * math.hypot(*errors))


def anchored(batch: int, seconds: float, slope: float | None) -> LinearFit:
    """A line through the measured ``(batch, seconds)`` with a plausible slope.

    The fixed cost is kept within ``[MIN_INTERCEPT_FRACTION·seconds,
    MAX_INTERCEPT_FRACTION·seconds]``; no usable slope means time ∝ batch.
    """
    if slope is None or slope <= 0:
        slope = seconds / batch
    intercept = min(
        max(seconds - slope * batch, MIN_INTERCEPT_FRACTION * seconds),
        MAX_INTERCEPT_FRACTION * seconds,
    )
    return LinearFit(intercept, (seconds - intercept) / batch)


@dataclass
class RankTimes:
    """One rank's measured compute times and the line fitted through them."""

    points: dict[int, Point] = field(default_factory=dict)
    prior: LinearFit | None = None
    """The line from before the last speed change, rescaled to the new speed."""
    window: list[TimedSample] = field(default_factory=list)
    last_batch: int | None = None
    error: float = 0.0
    """Typical relative standard error of one window's median, pooled over windows (0 until a
    window of 3 or more samples was seen)."""
    drift_sq: float = 0.0
    """Running mean of the squared relative difference between a window's median and the
    estimate it is folded into at the same batch, less what the two standard errors explain
    (may dip below 0 on a steady machine); see ``drift``."""
    drift_windows: int = 0
    """Windows that went into ``drift_sq``."""
    last_change: tuple[int, float] | None = None
    """(decision index, new/old speed ratio) of the rank's most recent speed change."""

    def add(self, batch: int, seconds: float) -> None:
        """One step's local batch and forward+backward seconds."""
        first = self.last_batch != batch
        self.last_batch = batch
        self.window.append((batch, seconds, first))
        if len(self.window) > WINDOW_LIMIT:
            del self.window[0]

    def capacity(self) -> float | None:
        """Samples/s at the most recently measured batch (None where unknown)."""
        batch = self.last_batch
        if not batch:
            return None
        recent = [s for s in self.window if s[0] == batch]
        if recent:
            seconds: float | None = median_seconds(recent)
        else:
            seconds = self.points[batch].seconds if batch in self.points else None
        return batch / seconds if seconds else None

    def line(self, batch: int, now: int) -> LinearFit | None:
        """This rank's time model, anchored at its estimate for ``batch`` when there is one."""
        fit = least_squares(self.points, now)
        current = self.points.get(batch)
        if current is None or batch == 0 or current.seconds <= 0:
            if fit is not None:
                return LinearFit(max(fit.intercept, 0.0), fit.slope)
            return self.prior if current is None else None
        if fit is not None:
            return anchored(batch, current.seconds, fit.slope)
        if self.prior is not None and self.prior.seconds(batch) > 0:
            scale = current.seconds / self.prior.seconds(batch)
            return anchored(batch, current.seconds, self.prior.slope * scale)
        return anchored(batch, current.seconds, None)

    def fold(self, now: int, smoothing: float, anchor: int) -> float | None:
        """Fold the window into the estimates; return new/old speed ratio on a speed change.

        ``anchor`` is the rank's batch in the split the window ran under (for the old line).
        """
        groups: dict[int, list[TimedSample]] = {}
        for sample in self.window:
            groups.setdefault(sample[0], []).append(sample)
        self.window.clear()
        changed: float | None = None
        for batch, samples in groups.items():
            if batch == self.last_batch and batch in self.points:
                # Only where there is history to compare with: right after a move the window's
                # halves differ mostly by load transients, and the whole window is steadier.
                samples = self._recent_part(samples)
            m, fresh_error = window_stats(samples)
            if fresh_error is not None:  # pooled over windows: one window's spread is itself noisy
                self.error = fresh_error if self.error == 0 else (self.error + fresh_error) / 2
            error = self.error
            p = self.points.get(batch)
            if p is None:
                self.points[batch] = Point(m, len(samples), now, error)
                continue
            if p.seconds > 0 and abs(m / p.seconds - 1) <= _tolerance(p.error, error):
                self._note_drift(m / p.seconds - 1, math.hypot(p.error, error))
                p.seconds = smoothing * p.seconds + (1 - smoothing) * m
                p.error = math.hypot(smoothing * p.error, (1 - smoothing) * error)
                p.samples += len(samples)
                p.updated = now
            elif batch == self.last_batch and p.seconds > 0:
                # Same batch, clearly different time: the rank's speed changed. Keep the old
                # line's shape rescaled to the new speed; forget the stale measurements.
                ratio = m / p.seconds
                old = self.line(anchor, now)
                self.prior = (
                    None if old is None else LinearFit(old.intercept * ratio, old.slope * ratio)
                )
                self.points = {batch: Point(m, len(samples), now, error)}
                changed = ratio
                self._note_change(now, ratio, math.hypot(p.error, error))
            else:  # an older batch size in this window jumped: replace its estimate
                self.points[batch] = Point(m, len(samples), now, error)
        while len(self.points) > MAX_POINTS:
            del self.points[min(self.points, key=lambda b: self.points[b].updated)]
        return changed

    @property
    def drift(self) -> float:
        """How much the rank's speed wanders from one window to the next beyond measurement
        error (shared caches, other tenants of a VM), relative: 0.1 = ±10 %. The spread inside
        a window does not show it; the balancer's dead-band must."""
        return math.sqrt(max(self.drift_sq, 0.0))

    def error_at(self, batch: int) -> float:
        """Relative standard error of the estimate at ``batch`` (the pooled one if none)."""
        p = self.points.get(batch)
        return p.error if p is not None else self.error

    def _note_drift(self, difference: float, explained: float) -> None:
        self.drift_windows += 1
        w = max(1 / self.drift_windows, DRIFT_WEIGHT)
        self.drift_sq = (1 - w) * self.drift_sq + w * (difference**2 - explained**2)

    def _note_change(self, now: int, ratio: float, explained: float) -> None:
        """Remember a speed change; one that undoes the previous change within
        ``FLAP_DECISIONS`` decisions is a jump between levels and counts as drift (a window
        beyond the change tolerance never reaches ``_note_drift`` otherwise, so a rank that
        flips between two speeds would look steady)."""
        last, self.last_change = self.last_change, (now, ratio)
        if last is not None and now - last[0] <= FLAP_DECISIONS and (ratio - 1) * (last[1] - 1) < 0:
            self._note_drift(max(min(ratio - 1, FLAP_CAP), -FLAP_CAP), explained)

    def _recent_part(self, samples: list[TimedSample]) -> list[TimedSample]:
        """The window's second half when its two halves clearly differ (the speed changed
        inside the window, or the first steps were a warm-up), else the whole window."""
        if len(samples) < 6:
            return samples
        early, late = samples[: len(samples) // 2], samples[len(samples) // 2 :]
        m_early, m_late = median_seconds(early), median_seconds(late)
        half_error = self.error * math.sqrt(2)  # each half has half the samples
        if m_early > 0 and abs(m_late / m_early - 1) > _tolerance(half_error, half_error):
            return late
        return samples

    def to_state(self) -> dict[str, Any]:
        """Plain-Python form for checkpoints."""
        return {
            "points": [
                [b, p.seconds, p.samples, p.updated, p.error] for b, p in self.points.items()
            ],
            "prior": None if self.prior is None else [self.prior.intercept, self.prior.slope],
            "window": [[b, t, first] for b, t, first in self.window],
            "last_batch": self.last_batch,
            "error": self.error,
            "drift": [self.drift_sq, self.drift_windows],
            "last_change": None if self.last_change is None else list(self.last_change),
        }

    @classmethod
    def from_state(cls, raw: dict[str, Any]) -> RankTimes:
        """Inverse of ``to_state``."""
        prior = raw["prior"]
        last = raw["last_batch"]
        change = raw.get("last_change")  # absent from older checkpoints
        return cls(
            points={
                int(b): Point(float(t), int(n), int(u), float(e)) for b, t, n, u, e in raw["points"]
            },
            prior=None if prior is None else LinearFit(float(prior[0]), float(prior[1])),
            window=[(int(b), float(t), bool(f)) for b, t, f in raw["window"]],
            last_batch=None if last is None else int(last),
            error=float(raw["error"]),
            drift_sq=float(raw.get("drift", [0.0, 0])[0]),  # absent from older checkpoints
            drift_windows=int(raw.get("drift", [0.0, 0])[1]),
            last_change=None if change is None else (int(change[0]), float(change[1])),
        )
