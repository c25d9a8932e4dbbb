"""The profile store: one ``Profile`` (profiles/profile.py) per file.

One file per (host, device, model, torch version, threads, slowdown) under
``$CORRAL_PROFILE_DIR``, else ``$XDG_CACHE_HOME/corral/profiles``, else
``~/.cache/corral/profiles``. Files are written atomically. ``find_profile`` never hands back
a profile that is missing, stale or made under other conditions: it returns None and a reason
the trainer puts into its ``capacity`` event.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from profiles.profile import Profile, created_at, profile_from_toml, profile_to_toml
from profiles.user_errors import CorralError


class ProfileStoreError(CorralError):
    """A profile cannot be written (directory not writable, disk full)."""

    title = "profile store"


@dataclass(frozen=True, kw_only=True)
class ProfileKey:
    """What a stored profile is keyed by: the conditions its speeds were measured under (a
    profile made under any other is not used)."""

    host: str
    """The host's name, as the trainer reports it."""
    device_name: str
    """The device's name (``profiles.bench.device_name``: the GPU's, or the CPU's)."""
    model: str
    """The model measured."""
    torch_version: str
    """torch's version (kernels change between releases)."""
    threads: int
    """torch's intra-op threads on a CPU."""
    slowdown: float
    """The emulated slowdown factor (1 for none)."""

    @classmethod
    def of(cls, profile: Profile) -> ProfileKey:
        """The key ``profile`` was stored under."""
        return cls(host=profile.host, device_name=profile.device_name, model=profile.model,
                   torch_version=profile.torch_version, threads=profile.threads,
                   slowdown=profile.slowdown)

    @property
    def conditions(self) -> str:
        """The key's measuring conditions, as lookups word them."""
        return f"torch {self.torch_version}, {self.threads} threads, slowdown {self.slowdown:g}"

    def mismatches(self, other: ProfileKey) -> list[str]:
        """``"<what> <other's> (need <this key's>)"`` for each field ``other`` differs in."""
        fields = (("host", "host"), ("device", "device_name"), ("model", "model"),
                  ("torch", "torch_version"), ("threads", "threads"), ("slowdown", "slowdown"))
        return [f"{name} {_shown(getattr(other, attr))} (need {_shown(getattr(self, attr))})"
                for name, attr in fields if getattr(other, attr) != getattr(self, attr)]


def _shown(value: object) -> str:
    """A key field as messages write it (a factor without trailing zeros)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


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


def profile_path(key: ProfileKey, *, root: Path | None = None,
                 precision: str | None = None) -> Path:
    """The file that holds the profile with exactly this key (a profile without a precision,
    made before it was recorded, has none in its name)."""
    name = (f"{slug(key.device_name)}--torch-{slug(key.torch_version)}--t{key.threads}"
            f"--s{key.slowdown:g}")
    name += f"--{slug(precision)}.toml" if precision is not None else ".toml"
    return model_dir(host=key.host, model=key.model, root=root) / name


def model_dir(*, host: str, model: str, root: Path | None = None) -> Path:
    """The folder of every profile of ``model`` made on ``host`` (any device, torch, threads
    or slowdown)."""
    base = Path(root) if root is not None else default_root()
    return base / slug(host) / slug(model)


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
    path = profile_path(ProfileKey.of(profile), root=root, precision=profile.precision)
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


def _alternatives(directory: Path, key: ProfileKey) -> list[str]:
    """Conditions of the other readable profiles for this key's host, device and model."""
    found = []
    for path in sorted(directory.glob("*.toml")) if directory.is_dir() else []:
        try:
            other = ProfileKey.of(load_profile(path))
        except (OSError, ValueError):
            continue
        if (other.host, other.device_name, other.model) == (key.host, key.device_name,
                                                            key.model):
            found.append(other.conditions)
    return found


def find_profile(
    key: ProfileKey,
    *,
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
        return profile_path(key, root=root, precision=labelled)

    path = stored(precision)
    remedy = (f"run `python -m trainer.profile_model --model {key.model}"
              f"{f' --precision {precision}' if precision else ''} --save` on {key.host}")
    note = ""
    if precision is not None and not path.is_file() and stored(None).is_file():
        path, note = stored(None), _unlabelled_note(stored(None), precision, unlabelled_ok)
        if not unlabelled_ok:
            return None, f"{note}; {remedy}"
    if not path.is_file():
        others = _alternatives(path.parent, key)
        detail = f"; stored ones differ ({'; '.join(others)})" if others else ""
        return None, (f"no profile for {key.model} on {key.host} ({key.device_name}, "
                      f"{key.conditions}){detail}; {remedy}")
    try:
        profile = load_profile(path)
    except (OSError, ValueError) as exc:
        return None, f"profile {path} is unreadable ({exc}); {remedy}"

    mismatches = key.mismatches(ProfileKey.of(profile))
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
