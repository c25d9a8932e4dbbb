"""The known_hosts file: its lines checked one by one, a host's recorded keys, a key replaced.

asyncssh verifies host keys against this file; corral reads it first, to skip a malformed
line with a warning naming the file and line (as OpenSSH does; asyncssh would refuse the whole
file), to tell a *changed* key (a recorded key differs from the one presented: possibly an
attack) from an unknown one, and for ``corral trust``, which replaces the host's recorded key
rather than adding a second one. Host patterns are matched as
written (``name`` or ``[name]:port``, plain or hashed ``|1|salt|hash``); wildcard patterns are
left to asyncssh.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from profiles.user_errors import CorralError


class KnownHostsError(CorralError):
    """A line of the known_hosts file cannot be read."""

    title = "malformed known_hosts file"


@dataclass(frozen=True)
class KnownHostLine:
    """One key line of a known_hosts file."""

    number: int
    """1-based line number in the file."""
    marker: str
    """``@cert-authority``, ``@revoked`` or empty."""
    patterns: str
    key: asyncssh.SSHKey
    raw: str
    """The line as written."""


def host_pattern(name: str, port: int) -> str:
    """How known_hosts names ``name`` at ``port``: the bare name on port 22."""
    return name if port == 22 else f"[{name}]:{port}"


def read_known_hosts(path: Path) -> list[KnownHostLine]:
    """Every key line of ``path`` that can be read (none when the file does not exist); see
    ``parse_known_hosts`` for the ones that cannot."""
    return parse_known_hosts(path)[0]


def parse_known_hosts(path: Path) -> tuple[list[KnownHostLine], list[str]]:
    """Every readable key line of ``path``, and a warning naming the file and line for each one
    that is not ``[@marker] patterns keytype base64-key [comment]``: like OpenSSH, such a line
    is skipped, and the other hosts' keys still count. ``KnownHostsError`` when the file
    cannot be read at all."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        raise KnownHostsError(f"cannot read {path}: {exc.strerror or exc}") from None
    lines: list[KnownHostLine] = []
    skipped: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        marker = words.pop(0) if words[0].startswith("@") else ""
        problem = ""
        if marker not in ("", "@cert-authority", "@revoked"):
            problem = f"unknown marker {marker!r}"
        elif len(words) < 3:
            problem = "expected: host patterns, key type, base64 key"
        if not problem:
            try:
                key = asyncssh.import_public_key(f"{words[1]} {words[2]}")
            except (asyncssh.KeyImportError, ValueError, binascii.Error) as exc:
                problem = f"the key does not parse ({exc})"
        if problem:
            shown = raw if len(raw) <= 60 else raw[:57] + "..."
            skipped.append(f"{path}, line {number}: {problem}: {shown!r}; that line is skipped "
                           "(fix or delete it)")
            continue
        lines.append(KnownHostLine(number=number, marker=marker, patterns=words[0], key=key,
                                   raw=raw))
    return lines, skipped


def _matches(patterns: str, wanted: str) -> bool:
    for pattern in patterns.split(","):
        if pattern.startswith("|1|"):
            try:
                _, _, salt, digest = pattern.split("|")
                mac = hmac.new(base64.b64decode(salt), wanted.encode(), hashlib.sha1).digest()
            except (ValueError, binascii.Error):
                continue
            if hmac.compare_digest(base64.b64encode(mac).decode(), digest):
                return True
        elif pattern == wanted:
            return True
    return False


def recorded_keys(path: Path, name: str, port: int) -> list[asyncssh.SSHKey]:
    """The host keys ``path`` records for ``name`` at ``port`` (plain lines, no CA keys)."""
    wanted = host_pattern(name, port)
    return [line.key for line in read_known_hosts(path)
            if not line.marker and _matches(line.patterns, wanted)]


def replace_host_key(path: Path, name: str, port: int, key: asyncssh.SSHKey) -> int:
    """Write ``key`` as the one key of ``name`` at ``port``, dropping the lines that name that
    host (atomically: a temporary file renamed over the old one). Returns how many lines were
    replaced."""
    wanted = host_pattern(name, port)
    read_known_hosts(path)  # an unreadable file is reported, never rewritten
    try:
        old = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        old = []
    kept, dropped = [], 0
    for raw in old:
        words = raw.split()
        if words and not words[0].startswith(("#", "@")) and _matches(words[0], wanted):
            dropped += 1
            continue
        kept.append(raw if raw.endswith("\n") else raw + "\n")
    key_type, key_data = key.export_public_key("openssh").decode().split()[:2]
    kept.append(f"{wanted} {key_type} {key_data}\n")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return dropped
