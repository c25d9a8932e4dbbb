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
from datetime import datetime, timezone
from pathlib import Path

from profiles.profile import Profile, created_at, profile_from_toml, profile_to_toml
from profiles.user_errors import CorralError


class ProfileStoreError(CorralError):
    """A profile cannot be written (directory not writable, disk full)."""

    title = "profile store"


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
