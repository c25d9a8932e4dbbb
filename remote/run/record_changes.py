"""The changes of a run's ``run.json`` the loop asks for, as records (no I/O): ``decide``
returns them, ``RunRecord.apply`` (``remote/run/record.py``) alone writes them."""

from __future__ import annotations

from dataclasses import dataclass

from remote.events import RunState, StopReport


@dataclass(frozen=True)
class RecordState:
    """Write the run's state and the first line of ``detail`` in ``run.json``."""

    state: RunState
    detail: str = ""


@dataclass(frozen=True)
class RecordLaunched:
    """Write the launch's facts in ``run.json`` (every host's launcher started)."""

    facts: dict[str, object]


@dataclass(frozen=True)
class RecordSuspects:
    """Write the hosts where processes of the run may be left."""

    hosts: frozenset[str]


@dataclass(frozen=True)
class RecordMembers:
    """Write the hosts in the run now and those that left it live (a ``membership`` event)."""

    hosts: tuple[str, ...]
    left: tuple[str, ...]
    cut_off: tuple[str, ...] = ()
    """Hosts that left unreachable: what runs there cannot be confirmed ended (suspects)."""
    cleanup: str = ""
    """What the record's ``cleanup`` says of them (empty: unchanged)."""


@dataclass(frozen=True)
class RecordDropped:
    """Write the hosts the run goes on with, and keep the ``dropped`` ones as suspect hosts
    (their processes were cut off, not stopped: ``status`` and ``stop`` must reach them)."""

    hosts: tuple[str, ...]
    dropped: frozenset[str]


@dataclass(frozen=True)
class AskStop:
    """Leave the ``STOP_ASKED`` mark for a launch under way."""


@dataclass(frozen=True)
class RecordCleanup:
    """Write what a stop found (``RunRecord.cleanup``), the outcome left alone."""

    report: StopReport


@dataclass(frozen=True)
class RecordDetached:
    """This process stops following the run on purpose (``RunRecord.detached``)."""


@dataclass(frozen=True)
class RecordAdopted:
    """This process follows the run from now on (``corral attach``): it owns the record if its
    follower was lost (``RunRecord.adopt``)."""


@dataclass(frozen=True)
class ClearStopMark:
    """A new launch of the run (``--resume``): an earlier stop's ``STOP_ASKED`` mark is done
    (``RunRecord.clear_stop``)."""


@dataclass(frozen=True)
class RecordForgotten:
    """A launch refused before it touched a host leaves no record (``RunRecord.forget``)."""


RecordChange = (RecordState | RecordLaunched | RecordSuspects | AskStop | RecordCleanup
                | RecordDetached | RecordForgotten | RecordMembers | RecordDropped
                | RecordAdopted | ClearStopMark)
"""A change of the record, asked for by ``remote.run.decide``, the handle's own stop, detach
or refused launch, or the controller's attach and resume; each is made in one place
(``RunRecord.apply``)."""


def suspects_after(before: set[str], report: StopReport) -> set[str]:
    """The hosts where processes of a run may be left after a stop that found ``report``:
    those suspected ``before`` that the stop did not look at, the ones it could not reach, and
    the ones where it left processes (one formula for the loop and ``corral stop``)."""
    return ({h for h in before if h not in report.remaining} | set(report.unreachable)
            | {h for h, n in report.remaining.items() if n})
