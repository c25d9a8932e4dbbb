"""The trainer's event format: the contract the remote layer and the console read.

Each rank appends one JSON object per line to ``RUN_DIR/metrics/rank-<r>.jsonl``, flushed as
written. Every object has ``"event"`` (its kind), ``"v"`` (the schema version), ``"t"`` (Unix
time, seconds) and ``"rank"``; the kinds are dataclasses, one module per family (a rank's life,
its steps, the split, its resources, evaluation, rounds, membership), and ``codec`` writes and
reads the lines (``docs/events.md``). Every caller imports from this face: ``from trainer.events
import StepEvent``. Readers ignore unknown fields and kinds, so adding a field or a kind is
backwards compatible; removing or renaming one bumps ``SCHEMA_VERSION``.
"""

from trainer.events.balancing import MEASURE_AFTER_STEPS, CapacityEvent, RebalanceEvent
from trainer.events.codec import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    EventFormatError,
    TrainerEvent,
    event_from_dict,
    event_to_dict,
    event_to_json,
    parse_event,
)
from trainer.events.evaluation import EVAL_METRICS, LOWER_IS_BETTER, EvalEvent, SamplesEvent
from trainer.events.lifecycle import CheckpointEvent, EndEvent, EndStatus, StartEvent
from trainer.events.membership import LeaveCause, MembershipChange, MembershipEvent
from trainer.events.progress import StepEvent
from trainer.events.round import RoundEvent, exchange_text
from trainer.events.usage import ResourceEvent

__all__ = [
    "EVAL_METRICS", "EVENT_TYPES", "LOWER_IS_BETTER", "MEASURE_AFTER_STEPS", "SCHEMA_VERSION",
    "CapacityEvent", "CheckpointEvent", "EndEvent", "EndStatus", "EvalEvent", "EventFormatError",
    "LeaveCause", "MembershipChange", "MembershipEvent", "RebalanceEvent", "ResourceEvent",
    "RoundEvent", "SamplesEvent", "StartEvent", "StepEvent", "TrainerEvent", "event_from_dict",
    "event_to_dict", "event_to_json", "exchange_text", "parse_event",
]
