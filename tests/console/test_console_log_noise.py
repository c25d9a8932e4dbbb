"""The logs panel hides torch's chatter and known warnings until ``v`` shows them, says how many
it hides, and never hides what a rank prints or an error."""

from __future__ import annotations

from typing import Any

from console_helpers import make_app, screen_text, settle, wait_for

from console.follow import event_lines
from console.widgets.logs import LogsPanel
from remote.api import LogLine
from tests.fake_runs import FakeController, scripted_run

NOISE = [
    "I1122 21:47:57.346000 27391 torch/distributed/run.py:747] Using nproc_per_node=1.",
    "[rank1]:[W1122 21:48:09.681658695 reducer.cpp:1529] Warning: find_unused_parameters=True "
    "was specified in DDP constructor, but did not find any unused parameters in the forward "
    "pass.",
    "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'.",
]
KEPT = ["hello from the user's script", "RuntimeError: CUDA out of memory"]


def noisy_run(run_id: str, **options: Any) -> list[Any]:
    """The scripted run with torch's chatter, a user's print and an error before it."""
    lines = [LogLine(t=0.0, host="alpha", rank=0 if i else None, text=text)
             for i, text in enumerate([*NOISE, *KEPT])]
    return [*lines, *scripted_run(run_id, **options)]


async def test_the_noise_key_shows_and_hides_torchs_chatter() -> None:
    app = make_app(FakeController(script=noisy_run))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.state == "completed")
        await settle(pilot)
        logs = app.query_one(LogsPanel)
        texts = {e.text for e in logs.shown}
        assert set(KEPT) <= texts and not texts & set(NOISE)
        assert f"Logs · {len(NOISE)} noise hidden (v shows)" in screen_text(app)
        assert "v Noise" in screen_text(app).splitlines()[-1]  # the footer names the key

        await pilot.press("v")
        await settle(pilot)
        assert set(NOISE) | set(KEPT) <= {e.text for e in logs.shown}
        assert "Logs · noise shown (v hides)" in screen_text(app)
        assert any("nproc_per_node=1" in row.plain for row in logs.rows)  # the panel's rows

        await pilot.press("v")
        await settle(pilot)
        assert not {e.text for e in logs.shown} & set(NOISE)
        assert not any("nproc_per_node=1" in row.plain for row in logs.rows)
        assert f"{len(NOISE)} noise hidden" in str(logs.border_title)


async def test_the_hidden_count_follows_the_filter() -> None:
    app = make_app(FakeController(script=noisy_run))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.state == "completed")
        await pilot.press("slash", *"gemm", "enter")
        await settle(pilot)
        logs = app.query_one(LogsPanel)
        assert logs.shown == [] and str(logs.border_title) == "Logs · 1 noise hidden (v shows)"


def test_the_headless_follower_leaves_noise_out() -> None:
    line = LogLine(t=0.0, host="alpha", rank=0, text=NOISE[1])
    assert event_lines(line) == []
    assert event_lines(LogLine(t=0.0, host="alpha", rank=0, text=KEPT[1])) == [
        "alpha:0 | RuntimeError: CUDA out of memory"]
