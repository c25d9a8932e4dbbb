"""A full disk on the remote side, said the same way as in the trainer: "disk full on HOST at
PATH" (``trainer.disk_full``: one class, one wording), with the fix that fits before a run.
"""

from __future__ import annotations

from trainer.disk_full import DiskFull

LOCAL = "this machine"
"""How this machine is named where a host's name would stand."""

RUN_AGAIN = "free space there (or point [cluster] run_root at a disk with room) and run again"
"""The fix of a full disk met before a run trains: its run directory or its records."""


def disk_full(host: str, path: str) -> DiskFull:
    """The error of a write to ``path`` on ``host`` (``LOCAL``: here) that found no space."""
    return DiskFull(path, host=host, fix=RUN_AGAIN)


__all__ = ["LOCAL", "RUN_AGAIN", "DiskFull", "disk_full"]
