"""The islands' set per round, given in advance (``--island-schedule``): the deterministic replay
of a live run's membership changes (docs/lowcomm.md, "Islands joining and leaving").

A low-communication run with live membership changes its islands only at a round's end, so its
math is fully described by which islands trained in each round and which of those were left out
of the round's average (an island lost mid-round). A run given that schedule from the start, on
every island it ever had, computes the same rounds: an island outside a round takes no inner
step (no batch, weight 0: the other islands' batches are where they would be without it) and
sends nothing (its error-feedback residual is dropped, as a leaver's is); a dropped island
trains its batches but its change is left out of the average. Pure: no torch, no collective.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from profiles.user_errors import UsageError


@dataclass(frozen=True)
class ScheduledRound:
    """From the round after global step ``after`` on (until the next entry): its islands."""

    after: int
    """The global step the round follows (0: from the start)."""
    active: frozenset[int]
    """The islands (by index, ordered by their lowest rank) that train in these rounds."""
    dropped: frozenset[int]
    """Active islands whose change is left out of the round's average (lost mid-round)."""


def parse_schedule(text: str) -> tuple[ScheduledRound, ...]:
    """``"0:0,1,2;16:0,1,2,3;40:0,~1,3;48:0,3"``: after step 16 islands 0-3 train; the round
    after step 40 trains 0, 1 and 3 and leaves 1 out of its average. Entries in step order."""
    entries: list[ScheduledRound] = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        step, sep, islands = part.partition(":")
        words = [w.strip() for w in islands.split(",") if w.strip()]
        if not sep or not step.strip().isdigit() or not words or not all(
                w.removeprefix("~").isdigit() for w in words):
            raise UsageError(f"--island-schedule {text!r}: {part!r} is not STEP:ISLANDS "
                             "(e.g. 16:0,1,~2: after step 16 islands 0, 1 and 2 train, 2's "
                             "change left out of the average)")
        entry = ScheduledRound(after=int(step),
                               active=frozenset(int(w.removeprefix("~")) for w in words),
                               dropped=frozenset(int(w[1:]) for w in words if w[0] == "~"))
        if entries and entry.after <= entries[-1].after:
            raise UsageError(f"--island-schedule {text!r}: steps must increase ({part!r})")
        entries.append(entry)
    return tuple(entries)


def islands_at(schedule: Sequence[ScheduledRound], step: int, islands: int
               ) -> tuple[frozenset[int], frozenset[int]]:
    """The round after global step ``step``: (the islands that train, those dropped from its
    average). No entry yet: every one of the run's ``islands`` trains."""
    current = [e for e in schedule if e.after <= step]
    if not current:
        return frozenset(range(islands)), frozenset()
    entry = current[-1]
    if max(entry.active, default=0) >= islands:
        raise UsageError(f"--island-schedule names island {max(entry.active)}, the run has "
                         f"{islands} (0..{islands - 1})")
    return entry.active, entry.dropped
