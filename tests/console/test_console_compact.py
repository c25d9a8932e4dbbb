"""80×24 first (issue 79): with three hosts every rank has its row in Throughput, not one
hidden behind a scrollbar."""

from __future__ import annotations

from console_helpers import make_app, screen_text, settle, wait_for

from tests.fake_runs import FakeController


async def test_every_rank_is_in_throughput_at_80x24() -> None:
    app = make_app(FakeController())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.state == "completed")
        await settle(pilot)
        text = screen_text(app)
    throughput = [line.split("│")[1] for line in text.splitlines() if line.count("│") >= 4]
    for rank in ("alpha:0", "beta:1", "gamma:2"):
        assert any(cell.startswith(rank) for cell in throughput), (rank, text)
    assert "20/20 steps in" in text  # the completed header keeps its summary line
