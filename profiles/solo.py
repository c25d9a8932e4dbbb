"""A device's solo throughput for a run: its stored profile, else a short probe, cached.

A run's baselines (``figures/solo.py``: % of Σ solo, × fastest host) need each device's
samples/s alone — forward and backward of the run's model, in its precision, at its
micro-batch. A stored profile (``profiles.store``, made by ``corral profile``) gives it from
its fit ``t(b) = a + c·b``; without one the trainer times a few passes (the probe) and the
figure is kept next to the profiles, under the same key plus the precision and the batch, so
the next run on that host reads it instead of measuring again.

The cache lives in ``<store>/solo/<host>/<model>/``: JSON, not TOML, and one folder deeper
than the profiles, so no reader of profiles (``find_profile``, the check's estimate probe)
ever takes a probe for a profile.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from profiles.profile import Profile, utc_now_iso
from profiles.store import ProfileKey, default_root, slug, write_atomic

SoloSource = Literal["profile", "probe", "unknown"]
"""Where a solo figure came from: a stored profile, a probe (measured now or cached), none."""
SOLO_SOURCES: tuple[SoloSource, ...] = ("unknown", "profile", "probe")
"""The sources in a fixed order (their index is how ranks all-gather them)."""


@dataclass(frozen=True, kw_only=True)
class Solo:
    """One device's solo throughput and where it came from."""

    samples_per_s: float | None
    """Forward+backward samples/s alone at the run's micro-batch (None: not known)."""
    source: SoloSource
    cached: bool = False
    """A probe read back from the cache (False: measured now, or not a probe)."""


def probe_path(key: ProfileKey, *, precision: str, batch: int, root: Path | None = None,
               emulated: bool = False) -> Path:
    """The cache file of a probe made under ``key`` in ``precision`` at ``batch`` samples;
    ``emulated``: in a run that emulates slower devices, whose probes time the rank's own work
    (trainer/step/slowdown.py), not the wall clock: kept apart."""
    base = Path(root) if root is not None else default_root()
    name = (f"{slug(key.device_name)}--torch-{slug(key.torch_version)}--t{key.threads}"
            f"--s{key.slowdown:g}--{slug(precision)}--b{batch}"
            f"{'--emulated' if emulated else ''}.json")
    return base / "solo" / slug(key.host) / slug(key.model) / name


def _usable(rate: object) -> float | None:
    return float(rate) if isinstance(rate, int | float) and math.isfinite(rate) and rate > 0 \
        else None


MAX_AGE_DAYS = 30.0
"""A cached probe older than this is measured again (as a stored profile goes stale)."""


def cached_probe(path: Path, max_age_days: float = MAX_AGE_DAYS) -> float | None:
    """The samples/s a probe cached at ``path`` (None: none, unreadable, or stale)."""
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError, KeyError):
        body = json.loads(path.read_text(encoding="utf-8"))
        made = datetime.fromisoformat(str(body["created"]).replace("Z", "+00:00"))
        made = made if made.tzinfo else made.replace(tzinfo=timezone.utc)
        if (datetime.now(timezone.utc) - made).total_seconds() > max_age_days * 86400:
            return None
        return _usable(body.get("samples_per_s"))
    return None


def solo_rate(key: ProfileKey, *, precision: str, batch: int, probe: Callable[[], float],
              profile: Profile | None = None, root: Path | None = None,
              emulated: bool = False) -> Solo:
    """The device's solo samples/s at ``batch``: from ``profile`` (the stored one that fits
    the run, None without), else the cached probe (younger than ``MAX_AGE_DAYS``), else
    ``probe()`` (seconds of work: a few timed passes), cached for the next run (``emulated``:
    apart, see ``probe_path``). A probe that gives no positive finite rate, or a cache that
    cannot be written, is no error: the figure is ``unknown``, or not kept."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if profile is not None:
        return Solo(samples_per_s=profile.samples_per_s(batch), source="profile")
    path = probe_path(key, precision=precision, batch=batch, root=root, emulated=emulated)
    if (kept := cached_probe(path)) is not None:
        return Solo(samples_per_s=kept, source="probe", cached=True)
    rate = _usable(probe())
    if rate is None:
        return Solo(samples_per_s=None, source="unknown")
    with contextlib.suppress(OSError):
        write_atomic(path, json.dumps({"samples_per_s": rate, "created": utc_now_iso()}))
    return Solo(samples_per_s=rate, source="probe")
