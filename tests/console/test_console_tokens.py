"""Tokens per rank in the console: a run that shares tokens (variable-length items) shows each
rank's tokens per step in the hosts panel, the latest step's while it runs and the run's mean
once it ended; a run that shares item counts shows no such column."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from console_helpers import make_app, screen_text, settle, wait_for

from remote.api import RankEvent
from tests.fake_runs import FakeController, scripted_run
from trainer.events import StepEvent


def _tokens(step: int, rank: int) -> int:
    """Rank r's tokens at a step: 100 per rank number plus 10 per step (distinct per rank)."""
    return 100 * (rank + 1) + 10 * step


def with_tokens(run_id: str, **options: Any) -> list[Any]:
    """The fake run, its step events carrying tokens."""
    return [dataclasses.replace(item, event=dataclasses.replace(
                item.event, tokens=_tokens(item.event.step, item.event.rank)))
            if isinstance(item, RankEvent) and isinstance(item.event, StepEvent) else item
            for item in scripted_run(run_id, **options)]


def _rank_tokens(text: str) -> dict[int, str]:
    """Each rank row's tokens/step cell in the hosts panel, read under the column title."""
    rows = [line.split("│")[1] for line in text.splitlines() if line.count("│") >= 2]
    header = next(row for row in rows if "tokens/step" in row)
    end = header.index("tokens/step") + len("tokens/step")
    return {int(row.split()[1]): row[end - len("tokens/step"):end].strip() for row in rows
            if row.split()[:1] and row.split()[0] in ("alpha", "beta", "gamma")
            and row.split()[1].isdigit()}


@pytest.mark.parametrize("state", ["running", "completed"])
def test_the_hosts_panel_shows_tokens_per_rank_for_a_run_that_shares_tokens(
        state: str) -> None:
    async def scenario() -> None:
        options = {"hold_at": 12} if state == "running" else {}
        app = make_app(FakeController(script=with_tokens, script_options=options))
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("s")
            model = app.session.model
            if state == "running":
                await wait_for(pilot, lambda: all(r.step == 11 for r in model.ranks.values()))
            else:
                await wait_for(pilot, lambda: model.state == "completed")
            await settle(pilot)
            cells = _rank_tokens(screen_text(app))
            # Running: the latest step's (11); ended: the mean over steps 1..20 (step 10.5).
            expected = {r: (_tokens(11, r) if state == "running" else 100 * (r + 1) + 105)
                        for r in range(3)}
            assert cells == {r: str(v) for r, v in expected.items()}, screen_text(app)

    asyncio.run(scenario())


def test_a_run_that_shares_item_counts_shows_no_tokens_column() -> None:
    async def scenario() -> None:
        app = make_app(FakeController())
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("s")
            await wait_for(pilot, lambda: app.session.model.state == "completed")
            await settle(pilot)
            text = screen_text(app)
            assert "samples/s" in text and "tokens/step" not in text

    asyncio.run(scenario())
