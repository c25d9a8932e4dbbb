"""The events file's lines: each kind's dataclass by its name, written and read back
(docs/events.md)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, get_args

from profiles.user_errors import CorralError
from trainer.events.balancing import CapacityEvent, RebalanceEvent
from trainer.events.evaluation import EvalEvent, SamplesEvent
from trainer.events.lifecycle import CheckpointEvent, EndEvent, StartEvent
from trainer.events.membership import MembershipEvent
from trainer.events.progress import StepEvent
from trainer.events.round import RoundEvent
from trainer.events.usage import ResourceEvent

SCHEMA_VERSION = 1

TrainerEvent = (
    StartEvent
    | StepEvent
    | CapacityEvent
    | RebalanceEvent
    | ResourceEvent
    | EvalEvent
    | CheckpointEvent
    | RoundEvent
    | SamplesEvent
    | MembershipEvent
    | EndEvent
)

EVENT_TYPES: dict[str, type[Any]] = {cls.kind: cls for cls in get_args(TrainerEvent)}
"""Each kind's dataclass, by its ``event`` name (from ``TrainerEvent``: a kind is listed once)."""
_FIELD_NAMES = {kind: frozenset(f.name for f in dataclasses.fields(cls))
                for kind, cls in EVENT_TYPES.items()}
"""Each kind's field names, read once (a seat's replay parses a whole record)."""


class EventFormatError(CorralError):
    """A line of an events file is not a valid event."""

    title = "bad event line"


def event_to_dict(event: TrainerEvent) -> dict[str, Any]:
    """The JSON object written for ``event`` (``event`` and ``v`` first)."""
    body = dataclasses.asdict(event)
    return {"event": event.kind, "v": SCHEMA_VERSION, **body}


def event_to_json(event: TrainerEvent) -> str:
    """One line of JSON (no newline) for ``event``."""
    return json.dumps(event_to_dict(event), separators=(",", ":"), allow_nan=False)


def event_from_dict(obj: dict[str, Any]) -> TrainerEvent | None:
    """Build the event for a decoded JSON object; None for a kind this reader does not know.

    Unknown fields are ignored; lists become tuples. A known kind with missing or ill-typed
    required fields raises ``EventFormatError``.
    """
    cls = EVENT_TYPES.get(str(obj.get("event")))
    if cls is None:
        return None
    names = _FIELD_NAMES[cls.kind]
    values = {name: tuple(value) if isinstance(value, list) else value
              for name, value in obj.items() if name in names}
    try:
        event: TrainerEvent = cls(**values)
        return event
    except TypeError as exc:
        raise EventFormatError(f"{cls.kind} event is missing fields: {exc}") from None


def parse_event(line: str) -> TrainerEvent | None:
    """Parse one line of an events file; None for an unknown kind or a blank line."""
    line = line.strip()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EventFormatError(f"not JSON ({exc.msg}): {line[:80]!r}") from None
    if not isinstance(obj, dict):
        raise EventFormatError(f"not a JSON object: {line[:80]!r}")
    return event_from_dict(obj)
