"""A full disk, said the same way wherever a write fails for lack of space: "disk full on HOST
at PATH" (this machine's run records here, a host's run directory in the launch and the check).
"""

from __future__ import annotations

from profiles.user_errors import CorralError
from trainer.disk_full import disk_full_on

LOCAL = "this machine"
"""How this machine is named where a host's name would stand."""


class DiskFull(CorralError):
    """A write failed for lack of space (ENOSPC)."""

    title = "disk full"

    def __init__(self, host: str, path: str) -> None:
        super().__init__(f"{disk_full_on(host, path)}: free space there (or point "
                         "[cluster] run_root at a disk with room) and run again")
