"""A full disk, said once: "disk full on HOST at PATH" (``disk_full_on``), wherever corral
meets one: the trainer's writes here, and the remote side's records, check and run monitor.

torch's checkpoint writer raises its own ``RuntimeError`` with the ``OSError`` 28 one level down
the exception chain, so the test walks the chain. Imports nothing but the standard library and
corral's error type (the event writer uses it, and remote reads events without torch).
"""

from __future__ import annotations

import errno
import os
import socket

from profiles.user_errors import CorralError
from trainer.launch_contract import DISK_FULL_EXIT, HOST_ENV

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
"""No space left, and a quota reached: to the user both are a full disk."""


def disk_full_on(host: str, path: os.PathLike[str] | str) -> str:
    """The words for a full disk, everywhere corral says it: ``disk full on HOST at PATH``."""
    return f"disk full on {host} at {path}"


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` or an error down its chain (cause or context) is a full disk."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


RESUME = "free space there and resume the run"
"""The fix of a full disk met by a running trainer (its checkpoints are on that disk)."""


class DiskFull(CorralError):
    """A write to ``folder`` failed for lack of space: in the trainer (on this host), in this
    machine's run records, or in a host's run directory at launch."""

    title = "disk full"

    def __init__(self, folder: os.PathLike[str] | str, what: str = "", *,
                 host: str | None = None, fix: str = RESUME) -> None:
        """``host``: where (default: this host, by its cluster.toml name when it has one)."""
        host = host or os.environ.get(HOST_ENV) or socket.gethostname()
        self.cause = disk_full_on(host, folder) + (f": {what}" if what else "")
        """What happened, without the fix: ``disk full on HOST at PATH: what``."""
        super().__init__(f"{disk_full_on(host, folder)}: " + (f"{what}; " if what else "")
                         + fix)


def exit_status(exc: CorralError) -> int:
    """A rank's exit status for ``exc``: ``DISK_FULL_EXIT`` for a full disk (the follower
    names it from the status alone), else the error's own."""
    return DISK_FULL_EXIT if isinstance(exc, DiskFull) else exc.exit_code
