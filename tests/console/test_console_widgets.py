"""The panels' text: columns that fit, greyed dead rows, compact narrow forms, formatting."""

from __future__ import annotations

import dataclasses

from console.formatting import bar, fmt_bytes, fmt_duration, fmt_rate, sparkline
from console.model.records import RankRow, RowView
from console.widgets.balancer import decision_row
from console.widgets.hosts import STALE_STYLE, render_row, visible_columns
from remote.api import Move


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
