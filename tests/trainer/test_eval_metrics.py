"""Every metric a task's ``evaluate`` returns is reported (its sum over the held-out set divided
by the unit count), in the ``eval`` event, the run's figures and TensorBoard; sums that cannot
be reduced stop the run at the first evaluation with one line naming the key."""

from __future__ import annotations

import math

import pytest
import torch

from figures.reducer import RunFigures
from profiles.user_errors import UsageError
from trainer.evaluate import chunk_sums, eval_event, reduce_sums
from trainer.events import EvalEvent, event_to_json, parse_event


def test_every_returned_sum_is_reported_per_unit() -> None:
    metrics = reduce_sums({"loss_sum": 8.0, "abs_error_sum": 2.0, "hits": 3.0, "count": 4.0})
    assert metrics == {"loss": 2.0, "abs_error": 0.5, "hits": 0.75, "perplexity": math.exp(2.0)}
    images = reduce_sums({"loss_sum": 4.0, "correct": 3.0, "count": 4.0})
    assert images == {"loss": 1.0, "accuracy": 0.75}  # counts correct: no perplexity
    tokens = reduce_sums({"loss_sum": 6.0, "tokens": 3.0})
    assert tokens == {"loss": 2.0, "perplexity": math.exp(2.0)}


@pytest.mark.parametrize(("returned", "named"), [
    ({"loss_sum": 1.0}, "no unit count"),
    ({"loss_sum": 1.0, "loss": 2.0, "count": 1.0}, "'loss_sum' and 'loss'"),
])
def test_sums_that_cannot_be_reduced_are_named(returned: dict[str, float], named: str) -> None:
    with pytest.raises(UsageError, match=named):
        reduce_sums(returned)


def test_a_value_that_is_not_one_number_is_named() -> None:
    with pytest.raises(UsageError, match=r"'per_item'.*not one number"):
        chunk_sums({"per_item": torch.ones(3), "count": 3})
    with pytest.raises(UsageError, match="not a dict"):
        chunk_sums((1.0, 2.0))
    assert chunk_sums({"loss_sum": torch.tensor(2.5), "count": 2}) == {"loss_sum": 2.5,
                                                                        "count": 2.0}


def test_metrics_travel_in_the_event_and_old_events_stay_readable() -> None:
    event = eval_event(5, {"loss_sum": 2.0, "abs_error_sum": 1.0, "count": 4.0}, 4, 0.1)
    back = parse_event(event_to_json(event))
    assert isinstance(back, EvalEvent) and back.metrics == event.metrics
    assert back.all_metrics()["abs_error"] == 0.25 and back.loss == 0.5
    old = parse_event('{"event":"eval","t":1,"rank":0,"step":3,"samples":8,"units":8,'
                      '"loss":0.5,"accuracy":0.25,"perplexity":null}')
    assert isinstance(old, EvalEvent) and old.all_metrics() == {"loss": 0.5, "accuracy": 0.25}
    figures = RunFigures()
    figures.observe(back, "alpha")
    figures.observe(old, "alpha")
    curves = figures.eval_points()
    assert curves["abs_error"] == [(5, 0.25)] and curves["loss"] == [(3, 0.5), (5, 0.5)]
