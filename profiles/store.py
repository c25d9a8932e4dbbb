"""Benchmark profiles: the ``Profile`` record and its TOML store.

One file per (host, device, model, torch version, threads, slowdown) under
``$CORRAL_PROFILE_DIR``, else ``$XDG_CACHE_HOME/corral/profiles``, else
``~/.cache/corral/profiles``. Files are written atomically. ``find_profile`` never hands back
a profile that is missing, stale or made under other conditions: it returns None and a reason
the trainer puts into its ``capacity`` event.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from profiles.user_errors import CorralError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 hosts only
    import tomli as tomllib

FORMAT_VERSION = 1
"""Version of the profile file layout; a file with another version is not used."""


class ProfileStoreError(CorralError):
    """A profile cannot be written (directory not writable, disk full)."""

    title = "profile store"


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


# -- locations ---------------------------------------------------------------------------------


def default_root() -> Path:
    """Where profiles live unless a ``root`` is given (see the module docstring)."""
    override = os.environ.get("CORRAL_PROFILE_DIR")
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "corral" / "profiles"


def slug(text: str) -> str:
    """``text`` as the store writes it in a folder or file name."""
    written = re.sub(r"[^a-z0-9._+-]+", "-", text.lower()).strip("-.")
    return written or "unknown"


def profile_path(
    *,
    host: str,
    device_name: str,
    model: str,
    torch_version: str,
    threads: int,
    slowdown: float,
    root: Path | None = None,
    precision: str | None = None,
) -> Path:
    """The file that holds the profile with exactly this key (a profile without a precision,
    made before it was recorded, has none in its name)."""
    name = f"{slug(device_name)}--torch-{slug(torch_version)}--t{threads}--s{slowdown:g}"
    name += f"--{slug(precision)}.toml" if precision is not None else ".toml"
    return model_dir(host=host, model=model, root=root) / name


def model_dir(*, host: str, model: str, root: Path | None = None) -> Path:
    """The folder of every profile of ``model`` made on ``host`` (any device, torch, threads
    or slowdown)."""
    base = Path(root) if root is not None else default_root()
    return base / slug(host) / slug(model)


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


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_profile(profile: Profile, *, root: Path | None = None) -> Path:
    """Store ``profile`` (replacing one with the same key); returns the file written."""
    path = profile_path(
        host=profile.host,
        device_name=profile.device_name,
        model=profile.model,
        torch_version=profile.torch_version,
        threads=profile.threads,
        slowdown=profile.slowdown,
        root=root,
        precision=profile.precision,
    )
    try:
        write_atomic(path, profile_to_toml(profile))
    except OSError as exc:
        raise ProfileStoreError(
            f"cannot write profile {path}: {exc.strerror or exc}; "
            "set CORRAL_PROFILE_DIR (or --store) to a writable directory"
        ) from exc
    return path


def load_profile(path: Path) -> Profile:
    """Read one profile file; raises ValueError (or OSError) when it cannot."""
    return profile_from_toml(Path(path).read_text(encoding="utf-8"))


# -- lookup ----------------------------------------------------------------------------------


def _conditions(profile: Profile) -> str:
    return (
        f"torch {profile.torch_version}, {profile.threads} threads, "
        f"slowdown {profile.slowdown:g}"
    )


def _alternatives(directory: Path, host: str, device_name: str, model: str) -> list[str]:
    """Conditions of the other readable profiles for this host, device and model."""
    found = []
    for path in sorted(directory.glob("*.toml")) if directory.is_dir() else []:
        try:
            other = load_profile(path)
        except (OSError, ValueError):
            continue
        if (other.host, other.device_name, other.model) == (host, device_name, model):
            found.append(_conditions(other))
    return found


def find_profile(
    *,
    host: str,
    device_name: str,
    model: str,
    torch_version: str,
    threads: int,
    slowdown: float,
    root: Path | None = None,
    max_age_days: float = 30.0,
    precision: str | None = None,
    unlabelled_ok: bool = True,
) -> tuple[Profile | None, str]:
    """The stored profile for exactly these conditions, with a one-line explanation.

    Returns ``(profile, "profile <path> from <date> ...")`` when one is usable, else
    ``(None, reason)``: missing, unreadable, stale (older than ``max_age_days``) or mismatched,
    and how to make a new one. Never raises for a bad or missing file. A profile without a
    precision (made before they recorded one) stands in for ``precision`` only when
    ``unlabelled_ok`` (the caller's judgement: fp32 on a CPU), and either way it is said.
    """
    def stored(labelled: str | None) -> Path:
        return profile_path(host=host, device_name=device_name, model=model, root=root,
                            torch_version=torch_version, threads=threads, slowdown=slowdown,
                            precision=labelled)

    path = stored(precision)
    wanted = f"torch {torch_version}, {threads} threads, slowdown {slowdown:g}"
    remedy = (f"run `python -m trainer.profile_model --model {model}"
              f"{f' --precision {precision}' if precision else ''} --save` on {host}")
    note = ""
    if precision is not None and not path.is_file() and stored(None).is_file():
        path, note = stored(None), _unlabelled_note(stored(None), precision, unlabelled_ok)
        if not unlabelled_ok:
            return None, f"{note}; {remedy}"
    if not path.is_file():
        others = _alternatives(path.parent, host, device_name, model)
        detail = f"; stored ones differ ({'; '.join(others)})" if others else ""
        return None, (
            f"no profile for {model} on {host} ({device_name}, {wanted}){detail}; {remedy}"
        )
    try:
        profile = load_profile(path)
    except (OSError, ValueError) as exc:
        return None, f"profile {path} is unreadable ({exc}); {remedy}"

    mismatches = _mismatches(profile, host=host, device_name=device_name, model=model,
                             torch_version=torch_version, threads=threads, slowdown=slowdown)
    if mismatches:
        return None, f"profile {path} was made with {', '.join(mismatches)}; {remedy}"

    age_days = (datetime.now(timezone.utc) - created_at(profile)).total_seconds() / 86400
    if age_days > max_age_days:
        return None, (
            f"profile {path} is stale: {age_days:.0f} days old "
            f"(limit {max_age_days:g}); {remedy}"
        )
    return profile, (f"profile {path} from {profile.created} "
                     f"({max(age_days, 0):.1f} days old{note})")


def _unlabelled_note(path: Path, precision: str, used: bool) -> str:
    """What a lookup says of a profile made before profiles recorded a precision."""
    if used:
        return f", made before profiles recorded a precision: taken as {precision}"
    return (f"profile {path} records no precision (made with torch's default TF32 "
            f"convolutions), not used for this {precision} run")


def _mismatches(profile: Profile, *, host: str, device_name: str, model: str,
                torch_version: str, threads: int, slowdown: float) -> list[str]:
    """``"<what> <stored> (need <wanted>)"`` for each condition the stored profile differs in."""
    return [
        f"{name} {got} (need {need})"
        for name, got, need in (
            ("host", profile.host, host),
            ("device", profile.device_name, device_name),
            ("model", profile.model, model),
            ("torch", profile.torch_version, torch_version),
            ("threads", profile.threads, threads),
            ("slowdown", f"{profile.slowdown:g}", f"{slowdown:g}"),
        )
        if got != need
    ]
