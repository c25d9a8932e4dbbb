"""The panels' text: columns that fit, greyed dead rows, compact narrow forms, formatting."""

from __future__ import annotations

import dataclasses

from console.formatting import bar, fmt_bytes, fmt_duration, fmt_rate, sparkline
from console.model.records import RankRow, RowView
from console.model.run import RunModel
from console.widgets.balancer import decision_row, split_row
from console.widgets.hosts import STALE_STYLE, render_row, visible_columns
from console.widgets.throughput import change_steps, chart_lines
from figures import Move
from remote.api import RankEvent
from tests.fake_runs import DEMO_HOSTS, events_only, scripted_run
from trainer.events import MembershipEvent, StepEvent


def test_narrow_terminals_drop_backend_and_device_first() -> None:
    wide = [c.title for c in visible_columns(160)]
    narrow = [c.title for c in visible_columns(78)]
    assert "backend" in wide and "device" in wide
    assert "backend" not in narrow and "device" not in narrow
    assert {"host", "rank", "samples/s", "batch"} <= set(narrow)


def test_dead_rank_row_is_greyed_and_names_the_reason() -> None:
    row = RankRow(rank=3, host="beta", local_batch=12, samples_per_s=40.0, cpu_percent=97.0,
                  rss_bytes=600 * 2**20)
    text = render_row(RowView(host="beta", rank_row=row, status="failed", stale=True,
                              reason="connection lost"), 120)
    assert "failed: connection lost" in text.plain
    assert "CPU 97% 600M" in text.plain and "40.0" in text.plain
    assert any(str(span.style) == STALE_STYLE for span in text.spans)


def test_decision_row_wide_and_narrow() -> None:
    decision = Move(step=21, previous=[32, 32, 32], split=[52, 28, 16], reason="slow rank 2",
                    predicted_gain=0.38, policy="dynamic", measured_gain=-0.05)
    assert "step 21" in decision_row(decision, 120).plain
    assert "32/32/32 → 52/28/16  pred +38%  meas -5%" in decision_row(decision, 120).plain
    assert decision_row(decision, 40).plain.startswith("21: →52/28/16 pred +38% meas -5%")
    decision = dataclasses.replace(decision, measured_gain=None)
    assert "meas …" in decision_row(decision, 120).plain


def test_formatting_helpers() -> None:
    assert (fmt_rate(None), fmt_rate(12.34), fmt_rate(812.4), fmt_rate(12345.0)) == (
        "—", "12.3", "812", "12.3k")
    assert (fmt_bytes(512 * 2**20), fmt_bytes(3 * 2**29)) == ("512M", "1.5G")
    assert (fmt_duration(42), fmt_duration(185), fmt_duration(7620)) == ("42s", "3m05s", "2h07m")
    assert bar(0.5, 4) == "██  " and bar(1.0, 3) == "███" and bar(0.0, 2) == "  "
    assert sparkline([1.0, 2.0, 3.0], 10) == "▁▅█"
    assert sparkline([5.0] * 3, 2) == "▄▄"


def test_balancer_labels_each_share_with_its_own_rank_at_the_first_step() -> None:
    """At step 1 ranks 0 and 2 have reported and rank 1 (beta, the medium host) has not yet:
    share 1 is ``rank 1`` and share 2 is gamma's, not the second rank reported so far."""
    late = 1
    events = [e for e in events_only(scripted_run("r1", steps=3))
              if not (isinstance(e, RankEvent) and e.event.rank == late)]
    first_step = next(i for i, e in enumerate(events)
                      if isinstance(e, RankEvent) and isinstance(e.event, StepEvent))
    model = RunModel(cluster_name="lab", hosts=[h.name for h in DEMO_HOSTS],
                     policy="dynamic", total_steps=3, global_batch=60)
    model.apply_all(events[:first_step + 2])  # rank 0's and rank 2's first step
    assert model.step == 1 and sorted(model.ranks) == [0, 2] and len(model.split) == 3
    labels = [split_row(model, i, 60).plain.split()[0] for i in range(3)]
    assert labels == ["alpha:0", "rank", "gamma:2"]
    assert split_row(model, 1, 60).plain.startswith("rank 1 ")


def test_the_throughput_chart_marks_the_first_step_after_a_change_of_hosts() -> None:
    events = events_only(scripted_run("r1", steps=8))
    model = RunModel(cluster_name="lab", hosts=[h.name for h in DEMO_HOSTS],
                     policy="dynamic", total_steps=8, global_batch=60)
    model.apply_all(events)
    assert len(model.history) >= 6
    plain = [line.plain for line in chart_lines(model.history, 20, 6, change_steps(model))]
    assert not any("┊" in line for line in plain)  # no change yet: no mark
    model.apply(RankEvent(host="alpha", event=MembershipEvent(
        t=2.0, rank=0, generation=1, step=4, change="left", hosts=("gamma",),
        cause="asked", world_size=2, members=(0, 1))))
    assert change_steps(model) == frozenset({5})
    column = [p.step for p in list(model.history)[-20:]].index(5)
    lines = chart_lines(model.history, 20, 6, change_steps(model))
    marks = {x for line in lines for x, glyph in enumerate(line.plain) if glyph == "┊"}
    assert marks == {column}


def test_a_long_push_error_keeps_the_header_to_its_two_lines() -> None:
    """Issue 58: the push error wrapped in the header, over its progress line; each line is
    now cut at the edge with an ellipsis, and the logs panel holds the error whole."""
    from rich.console import Console

    from console.widgets.header import header_text
    from remote.api import RunStatus

    error = ("push to h1 failed: `set -e; mkdir -p \"$HOME\"/.corral/code; tmp=$(mktemp -d); "
             + "x" * 200 + "` exited with status 1\nstderr: tar: short read")
    model = RunModel.of_run("r-1")
    model.apply(RunStatus(t=1.0, run_id="r-1", state="failed", detail=error))
    console = Console(width=80)  # rendered as the widget is, at its width
    lines = ["".join(segment.text for segment in line).rstrip() for line in
             console.render_lines(header_text(model, 2.0, 80), pad=False)]
    assert len(lines) == 2, lines
    assert lines[0].startswith("corral") and "● failed · push to h1 failed" in lines[0]
    assert lines[0].endswith("…") and "step 0" in lines[1]
    assert "tar: short read" not in lines[0]  # a second line of the detail: in the logs
    assert any("tar: short read" in line.text for line in model.logs), model.logs
