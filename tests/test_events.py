"""The event format: round trip, tolerant reading, and the doc naming every field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from trainer.event_log import EventWriter, events_path
from trainer.events import EVENT_TYPES, EventFormatError, StepEvent, event_to_json, parse_event


def test_writer_appends_flushed_lines_that_parse_back(tmp_path: Path) -> None:
    path = events_path(tmp_path, 3)
    writer = EventWriter(path)
    event = StepEvent(t=1.0, rank=3, step=1, epoch=0, local_batch=8, loss=2.5,
                      compute_s=0.1, step_s=0.2, samples_per_s=40.0)
    writer.emit(event)
    # Readable before close: each line is flushed as it is written.
    assert parse_event(path.read_text().splitlines()[0]) == event
    writer.close()
    assert path == tmp_path / "metrics" / "rank-3.jsonl"


def test_unknown_kinds_and_fields_are_ignored() -> None:
    assert parse_event('{"event": "future", "t": 1}') is None
    line = json.loads(event_to_json(StepEvent(t=1.0, rank=0, step=2, epoch=0, local_batch=4,
                                              loss=1.0, compute_s=0.1, step_s=0.1,
                                              samples_per_s=40.0)))
    line["new_field"] = 7
    event = parse_event(json.dumps(line))
    assert isinstance(event, StepEvent) and event.step == 2


@pytest.mark.parametrize("line", ["not json", "[1, 2]", '{"event": "step", "t": 1}'])
def test_malformed_lines_raise_a_format_error(line: str) -> None:
    with pytest.raises(EventFormatError):
        parse_event(line)


def test_events_doc_names_every_kind_and_field() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "events.md").read_text()
    for kind, cls in EVENT_TYPES.items():
        assert f"`{kind}`" in doc
        for field in dataclasses.fields(cls):
            assert f"`{field.name}`" in doc, f"docs/events.md lacks {kind}.{field.name}"
