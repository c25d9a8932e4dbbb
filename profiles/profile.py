"""The ``Profile`` record: how fast one device of one host trains one model, and its TOML form.

``profiles.store`` keeps one file per profile; ``remote/checks/estimate_facts.py`` reads the
same form back from a host's store before a run.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 hosts only
    import tomli as tomllib

FORMAT_VERSION = 1
"""Version of the profile file layout; a file with another version is not used."""


@dataclass(frozen=True, kw_only=True)
class Profile:
    """How fast one device of one host trains one model, solo (no DDP), at its local batch.

    Step time follows ``t(b) = a + c*b`` seconds, fitted to ``step_s`` measured at ``batches``.
    """

    host: str
    """Hostname the profile was measured on."""
    device: str
    """torch device string used: ``cpu`` or ``cuda:N``."""
    device_name: str
    """GPU name or CPU model: together with host, the device part of the store key."""
    model: str
    torch_version: str
    threads: int
    """``torch.get_num_threads()`` during the benchmark."""
    slowdown: float
    """Emulated slowdown factor the benchmark ran with (1.0 = none)."""
    created: str
    """When the benchmark ran: ISO 8601 in UTC, e.g. ``2026-11-21T04:30:00Z``."""
    batches: tuple[int, ...]
    """Local batch sizes measured, ascending."""
    step_s: tuple[float, ...]
    """Median forward+backward seconds at each of ``batches`` (slowdown included)."""
    a: float
    """Fixed seconds per step (>= 0)."""
    c: float
    """Seconds per sample (>= 0)."""
    max_batch: int | None = None
    """Largest local batch that fits in memory (with headroom); None when unknown."""
    gradient_bytes: int | None = None
    """Bytes of the model's trainable parameters, what each step's gradient exchange carries
    (None in profiles made before it was recorded)."""
    precision: str | None = None
    """The arithmetic the benchmark ran in, as the trainer's ``--precision``: ``fp32`` (IEEE:
    TF32 off), ``tf32`` or ``bf16`` (autocast); part of the key. None in profiles made before
    it was recorded, which ran with torch's default (cuDNN convolutions in TF32 on a GPU)."""

    def __post_init__(self) -> None:
        if len(self.batches) != len(self.step_s) or not self.batches:
            raise ValueError("profile needs one step time per measured batch size")
        if any(b < 1 for b in self.batches):
            raise ValueError(f"profile batch sizes must be >= 1, got {self.batches}")
        if not (math.isfinite(self.a) and math.isfinite(self.c)) or self.a < 0 or self.c < 0:
            raise ValueError(f"profile fit must have a >= 0 and c >= 0, got a={self.a} c={self.c}")
        if self.a + self.c <= 0:
            raise ValueError("profile fit gives a zero step time")
        if self.threads < 1:
            raise ValueError(f"profile threads must be >= 1, got {self.threads}")
        if not self.slowdown >= 1.0:
            raise ValueError(f"profile slowdown must be >= 1.0, got {self.slowdown}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError(f"profile max_batch must be >= 1 or None, got {self.max_batch}")
        created_at(self)  # raises ValueError when not ISO 8601

    def step_time(self, batch: int) -> float:
        """Predicted seconds for one step at local batch ``batch``."""
        return self.a + self.c * batch

    def samples_per_s(self, batch: int) -> float:
        """Predicted solo throughput at local batch ``batch``: ``batch / (a + c*batch)``."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        return batch / self.step_time(batch)

    def to_dict(self) -> dict[str, Any]:
        """A JSON/TOML-ready dict (tuples become lists)."""
        data = dataclasses.asdict(self)
        data["batches"] = list(self.batches)
        data["step_s"] = list(self.step_s)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """Inverse of ``to_dict``; raises ValueError/TypeError/KeyError on bad data."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["batches"] = tuple(int(b) for b in values["batches"])
        values["step_s"] = tuple(float(s) for s in values["step_s"])
        for key in ("a", "c", "slowdown"):
            values[key] = float(values[key])
        return cls(**values)


def created_at(profile: Profile) -> datetime:
    """``profile.created`` as an aware UTC datetime."""
    stamp = datetime.fromisoformat(profile.created.replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def utc_now_iso() -> str:
    """Now, as the ISO 8601 UTC string profiles use."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# -- TOML ------------------------------------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        escaped = []
        for ch in value:
            if ch in ('"', "\\"):
                escaped.append("\\" + ch)
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                escaped.append(f"\\u{ord(ch):04x}")
            else:
                escaped.append(ch)
        return '"' + "".join(escaped) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def profile_to_toml(profile: Profile) -> str:
    """The profile as a flat TOML document (a None ``max_batch`` is left out)."""
    lines = [
        "# corral benchmark profile (python -m trainer.profile_model --save)",
        f"format = {FORMAT_VERSION}",
    ]
    for key, value in profile.to_dict().items():
        if value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def profile_from_toml(text: str) -> Profile:
    """Parse ``profile_to_toml`` output; raises ValueError on anything else."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not valid TOML: {exc}") from exc
    if data.get("format") != FORMAT_VERSION:
        raise ValueError(f"format {data.get('format')!r}, expected {FORMAT_VERSION}")
    try:
        return Profile.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"missing or bad field: {exc}") from exc
