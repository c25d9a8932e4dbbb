"""Which rank of a host torchrun found failing first, and its exit status, from the host's
launcher log (``remote.run.monitor``): its error summary (``rank : N (local_rank: L)``,
``exitcode : N``, written as the launcher exits) or, earlier, its line as it saw the rank end
(``failed (exitcode: N) local_rank: L (pid: P)``). The earlier line reaches the log when the
summary may not: a rank ended by a full disk exits as the disk is still full, the summary is
lost and its ``DISK_FULL_EXIT`` with it (the chaos run blamed a peer's broken pipe)."""

from __future__ import annotations

import re
from dataclasses import dataclass

SUMMARY_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)\s*\(local_rank:\s*(\d+)")
SUMMARY_EXIT = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")
RANK_ENDED = re.compile(r"\bfailed \(exitcode: (-?\d+)\) local_rank: (\d+) \(pid")


@dataclass(frozen=True)
class RootCause:
    """What one launcher log line says of the failing rank (None: not said there)."""

    rank: int | None = None
    """torch's global rank (its node order, not corral's host order)."""
    local: int | None = None
    """The rank's local rank on its host."""
    exit: int | None = None
    """Its exit status (negative: the signal that killed it)."""


def root_cause(text: str) -> RootCause:
    """What ``text`` (one line of a host's launcher log) says of the failing rank."""
    if (match := SUMMARY_RANK.match(text)):
        return RootCause(rank=int(match.group(1)), local=int(match.group(2)))
    if (match := SUMMARY_EXIT.match(text)):
        return RootCause(exit=int(match.group(1)))
    if (match := RANK_ENDED.search(text)):
        return RootCause(local=int(match.group(2)), exit=int(match.group(1)))
    return RootCause()
