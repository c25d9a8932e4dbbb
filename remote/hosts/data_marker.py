"""How the data sync finds a host that sees this machine's files: the master writes a marker
into the launch folder, the host's probe (``remote.hosts.data_sync``) reads it back. A host
that reads the same token there needs nothing sent (a ``local`` host, or one mounting the
master's filesystem): found, never guessed from an address."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


class Marker:
    """The file the master writes into the launch folder for hosts to read back: one that
    reads the same token there sees this machine's files. Removed on exit."""

    def __init__(self, folder: Path) -> None:
        self.token = secrets.token_hex(16)
        self.path: Path | None = folder / f".corral-marker-{self.token[:12]}"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w") as out:
                out.write(self.token)
        except OSError:  # a read-only folder: no host can be found sharing it
            self.path = None

    def pair(self) -> tuple[str, str] | None:
        """``(path, token)`` for the probe; None without a marker."""
        return (str(self.path), self.token) if self.path is not None else None

    def __enter__(self) -> Marker:
        return self

    def __exit__(self, *_: object) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
