"""Which failure in a run's logs is the culprit's, and which are collateral.

When one rank fails, its peers fail after it: their collective finds the connection closed by
that peer, or times out waiting for it. Host order puts rank 0's collateral error first. The
run's record already names the culprit (``remote.run.monitor``: a killed, died or hung rank
before a failed one, the earliest among equals); this module finds where that rank's story
starts in the logs, and labels every other failure whose own words are a peer's loss or a
timeout as collateral. ``corral logs --failure`` and the console's ``t`` both call it.

The rule, in order (the first that finds a line wins):

1. the first traceback or failed-worker line of the recorded culprit rank;
2. the first failed-worker line of its host's launcher (a rank killed by SIGKILL or the
   kernel's out-of-memory killer prints nothing: torchrun's ``exitcode: -9`` says it);
3. the culprit rank's last line (a hung rank neither raised nor was reported failed);
4. without a recorded culprit, the first failure that is not collateral, else the first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from remote.records.log_search import FIRST_FAILURE, RunLogLine

COLLATERAL = re.compile(
    r"Connection (closed|reset) by peer|Broken pipe|timed out|Timeout|DistNetworkError|"
    r"NCCL (communicator|watchdog)|ProcessGroupNCCL|recvBytes|sendBytes", re.IGNORECASE)
"""The words of an error that follows from a peer's loss: its connection closed, a timeout."""

STORY_LINES = 40
"""How many of a rank's lines after a failure's start are read to tell why it failed."""


Key = tuple[str, "int | None"]
"""A rank's (or with rank None, a host launcher's) host and global rank."""


@dataclass(frozen=True)
class FailureStart:
    """Where one rank's (or launcher's) failure starts in a run's lines, and whether it
    follows from another's."""

    index: int
    """Its first line's index in the lines searched (a line several ranks printed alike
    starts each one's failure)."""
    key: Key
    opens: int
    """The index of its first line that this rank printed alone (its error, not the
    ``Traceback`` header every rank printed alike), else ``index``."""
    collateral: bool
    """True when its own words are a peer's loss or a timeout."""

    @property
    def source(self) -> str:
        """``host:rank`` or ``host:launcher`` (``RunLogLine.source``)."""
        host, rank = self.key
        return f"{host}:{'launcher' if rank is None else rank}"


def _keys(lines: Sequence[RunLogLine]) -> list[list[Key]]:
    """Each line's printers: its rank, or every rank of a line several printed alike."""
    hosts = {line.rank: line.host for line in lines if line.rank is not None and not line.ranks}
    return [[(hosts.get(r, line.host), r) for r in line.ranks] if line.ranks
            else [(line.host, line.rank)] for line in lines]


def failure_starts(lines: Sequence[RunLogLine]) -> list[FailureStart]:
    """Every traceback or failed-worker line in ``lines`` per rank that printed it, each
    labelled collateral or not from that rank's next ``STORY_LINES`` lines."""
    keys = _keys(lines)
    starts = []
    for i, line in enumerate(lines):
        if not FIRST_FAILURE.search(line.text):
            continue
        for key in keys[i]:
            story = [j for j in range(i, len(lines)) if key in keys[j]][:STORY_LINES]
            ends = next((n for n, j in enumerate(story[1:], 1)
                         if FIRST_FAILURE.search(lines[j].text)), len(story))
            collateral = any(COLLATERAL.search(lines[j].text) for j in story[:ends])
            opens = next((j for j in story[:ends] if len(keys[j]) == 1), i)
            starts.append(FailureStart(i, key, opens, collateral))
    return [_launcher_follows(s, starts) for s in starts]


def _launcher_follows(start: FailureStart, starts: list[FailureStart]) -> FailureStart:
    """A launcher's failed-worker line is collateral when its host's ranks failed only as
    collateral (torchrun reports a victim's exit in words of its own)."""
    host, rank = start.key
    if rank is not None:
        return start
    ranks = [s.collateral for s in starts if s.key[0] == host and s.key[1] is not None]
    return replace(start, collateral=bool(ranks) and all(ranks))


def culprit_line(lines: Sequence[RunLogLine], host: str | None = None,
                 rank: int | None = None) -> int | None:
    """The index of the line where the failure of rank ``rank`` on ``host`` (the run's
    recorded culprit; None: not known) starts in ``lines``, by the module's rule; None when no
    line tells of a failure."""
    starts = failure_starts(lines)
    if host is not None:
        own = [s.opens for s in starts if s.key == (host, rank)]
        launcher = [s.opens for s in starts if s.key == (host, None)]
        last = [i for i, keys in enumerate(_keys(lines))
                if rank is not None and (host, rank) in keys]
        for found in (own[:1], launcher[:1], last[-1:]):
            if found:
                return found[0]
    own_cause = [s for s in starts if not s.collateral]
    return (own_cause or starts)[0].opens if starts else None


def collateral_sources(lines: Sequence[RunLogLine], culprit: int | None) -> list[str]:
    """The sources whose failures are collateral, other than the culprit's line at index
    ``culprit``: what ``corral logs --failure`` and ``t`` label as following from it."""
    own = _keys(lines)[culprit] if culprit is not None else []
    seen: list[str] = []
    for start in failure_starts(lines):
        if start.collateral and start.key not in own and start.source not in seen:
            seen.append(start.source)
    return seen


FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line \d+')
"""A traceback's frame line (its source line follows, indented deeper)."""
FOLDED_FRAME = re.compile(r"[/\\](runpy\.py|trainer[/\\][^\"]*|corral[/\\][^\"]*)$")
"""Frames of Python's script runner and of corral's own launch code: no user's cause."""


def fold_frames(lines: Sequence[str]) -> list[str]:
    """``lines`` with each run of runpy's and corral's own traceback frames (a frame line and
    the source line under it) as one ``  … N frames of runpy and corral`` line."""
    out: list[str] = []
    folded = 0
    i = 0
    while i < len(lines):
        frame = FRAME.match(lines[i])
        if frame and FOLDED_FRAME.search(frame["path"]):
            folded += 1
            follows = i + 1 < len(lines) and not FRAME.match(lines[i + 1]) \
                and _indent(lines[i + 1]) > _indent(lines[i])
            i += 2 if follows else 1
            continue
        if folded:
            out.append(f"{' ' * _indent(lines[i])}… {folded} frame{'s' * (folded > 1)} of "
                       "runpy and corral")
            folded = 0
        out.append(lines[i])
        i += 1
    if folded:
        out.append(f"  … {folded} frame{'s' * (folded > 1)} of runpy and corral")
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())
