"""Helpers for the console tests: an app on the fake controller with a frozen clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from console.app import ConsoleApp
from console.model.run import RunModel
from console.session import Session
from console.widgets.modals import CheckReportScreen
from tests.fake_runs import FakeController

if TYPE_CHECKING:
    from remote.config.cluster import ClusterConfig

FIXED_NOW = 1_000_030.0
"""The injected clock: elapsed times and snapshots do not depend on when the test runs."""


def make_app(controller: FakeController | None = None, *, config: ClusterConfig | None = None,
             **options: Any) -> ConsoleApp:
    """A console on the fake controller (three hosts, 20 steps) with a frozen clock; with
    ``config``, that cluster's recorded runs are its past runs."""
    controller = controller or FakeController()
    model = RunModel(cluster_name="lab", hosts=[h.name for h in controller.hosts],
                     policy="dynamic", total_steps=20, global_batch=60)
    session = Session(config=config, controller=controller, model=model,
                      clock=lambda: FIXED_NOW)
    return ConsoleApp(session, **options)


async def wait_for(pilot: Any, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        await pilot.pause(0.02)
    await asyncio.sleep(0)


def screen_text(app: Any) -> str:
    """The app's whole screen as plain text (what the operator reads); ``settle`` first."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


async def settle(pilot: Any) -> None:
    """Redraw the panels from the model and let the screen update."""
    pilot.app.refresh_panels(force=True)
    await pilot.pause()


async def check_report_text(pilot: Any, key: str) -> str:
    """Press ``key``, wait for the check report it opens and return the screen's text."""
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, CheckReportScreen))
    await pilot.pause()
    return screen_text(pilot.app)
