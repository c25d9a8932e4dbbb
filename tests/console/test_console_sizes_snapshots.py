"""80×24 first (issue 79): the run screen at 80×24 and at 200×50 in each situation an operator
meets — running, completed, failed, after a leave, after a join, attached mid-run — as SVG
snapshots, and what must be readable in each asserted from the screen's text: every host's
name and share in Throughput and in the Balancer (compact rows, no scrollbar), the completed
header's summary line, no cut step number. The runs are recorded events (the fake controller's
scripts, or a recorded leave and join fed to the model): no process starts.

Regenerate after an intended change of the layout with
``python -m pytest tests/console/test_console_sizes_snapshots.py --snapshot-update``."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from console_helpers import FIXED_NOW, make_app, screen_text, settle, wait_for
from test_console_snapshots import run_until
from test_seat_fold import T0, membership_run

from console.app import ConsoleApp
from remote.api import RankEvent, RunStatus
from tests.fake_runs import FakeController, FakeHost

SIZES = [(80, 24), (200, 50)]
Pilot = Any
Prepare = Callable[[Pilot], Awaitable[None]]


def panel_text(app: ConsoleApp, panel_id: str) -> str:
    """The lines of the screen inside the panel ``panel_id``'s border."""
    region = app.screen.query_one(f"#{panel_id}").region
    lines = screen_text(app).splitlines()[region.y + 1:region.bottom - 1]
    return "\n".join(line[region.x + 1:region.right - 1] for line in lines)


def _shifted(event: Any) -> Any:
    """A recorded event at the fake clock's time (the header's elapsed time reads sensibly)."""
    return dataclasses.replace(event, t=event.t - T0 + FIXED_NOW - 40)


def fed_membership(until: float) -> Prepare:
    """A run of hosts a, b, c fed from its record up to ``until`` seconds in: c leaves at
    step 8 (asked), and joins again at step 14 as rank 3."""

    async def prepare(pilot: Pilot) -> None:
        model = pilot.app.session.model
        model.reset_run("m-1")
        model.apply(RunStatus(t=FIXED_NOW - 40, run_id="m-1", state="running"))
        for host, event in sorted(membership_run(), key=lambda hl: hl[1].t):
            if event.t <= T0 + until:
                model.apply(RankEvent(host=host, event=_shifted(event)))
        await settle(pilot)

    return prepare


MEMBERS = [FakeHost(name=n) for n in "abc"]
SITUATIONS: dict[str, tuple[Callable[[], ConsoleApp], Prepare]] = {
    "running": (lambda: make_app(FakeController(script_options={"hold_at": 12})),
                run_until(lambda m: m.step == 11)),
    "completed": (lambda: make_app(FakeController()),
                  run_until(lambda m: m.state == "completed")),
    "failed": (lambda: make_app(FakeController(script_options={"fail": (2, 8)})),
               run_until(lambda m: m.state == "failed")),
    "after_a_leave": (lambda: make_app(FakeController(hosts=MEMBERS)), fed_membership(12)),
    "after_a_join": (lambda: make_app(FakeController(hosts=MEMBERS)), fed_membership(20)),
}


async def _attached(pilot: Pilot) -> None:
    """``corral attach`` on a run at step 11: the record first, then the live tail."""
    await wait_for(pilot, lambda: pilot.app.session.model.step == 11)
    pilot.app.clear_notifications()
    await settle(pilot)
    await settle(pilot)


SITUATIONS["attach_mid_run"] = (
    lambda: make_app(FakeController(script_options={"hold_at": 12}), attach_run="fake-1"),
    _attached)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("situation", list(SITUATIONS))
def test_every_host_is_readable_at_each_size(snap_compare: Any, situation: str,
                                             size: tuple[int, int]) -> None:
    make, prepare = SITUATIONS[situation]
    app = make()
    seen: dict[str, str] = {}

    async def run_before(pilot: Pilot) -> None:
        await prepare(pilot)
        await settle(pilot)  # a panel sized to its rows draws them at the next pass
        seen.update(screen=screen_text(app), throughput=panel_text(app, "throughput"),
                    balancer=panel_text(app, "balancer"), hosts=panel_text(app, "hosts"))

    assert snap_compare(app, terminal_size=size, run_before=run_before)
    model = app.session.model
    in_run = [f"{row.host}:{row.rank}" for row in model.ranks_in_run()]
    assert len(in_run) == (2 if situation == "after_a_leave" else 3)
    for label in in_run:  # every rank of the run, in both panels
        assert label in seen["throughput"], (label, seen["throughput"])
        assert label in seen["balancer"], (label, seen["balancer"])
    balancer_lines = seen["balancer"].splitlines()
    for index, share in enumerate(model.split):  # each with its share, after its label
        label = in_run[index]
        line = next(line for line in balancer_lines if label in line)
        after = line.split(label, 1)[1].split(":", 1)[0].split()
        assert next(word for word in after if word.isdigit()) == str(share), (label, line)
    if situation == "completed":
        assert "20/20 steps in" in seen["screen"].splitlines()[1]  # the header's summary line
    if situation == "failed":  # the header names the rank that failed
        assert "gamma" in seen["screen"].splitlines()[0], seen["screen"]
    if situation == "after_a_leave":
        assert "left at step 8 (asked)" in seen["hosts"] or "left @8" in seen["hosts"]
    if situation == "after_a_join":
        assert "joined at step 14" in seen["hosts"] or "joined @14" in seen["hosts"]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_eight_hosts_show_every_rank_and_share_without_a_scrollbar(
        size: tuple[int, int]) -> None:
    """Eight hosts at 80×24: the hosts' rows, the sparklines and the shares go several to a
    line, none hidden."""
    hosts = [FakeHost(name=f"host{i}", slowdown=1 + i / 2) for i in range(8)]
    app = make_app(FakeController(hosts=hosts, script_options={"hold_at": 12}))
    async with app.run_test(size=size) as pilot:
        await run_until(lambda m: m.step == 11)(pilot)
        await settle(pilot)
        model = app.session.model
        throughput, balancer = panel_text(app, "throughput"), panel_text(app, "balancer")
        hosts = panel_text(app, "hosts")
        for rank, row in sorted(model.ranks.items()):
            assert f"{row.host}:{rank}" in throughput, throughput
            assert f"{row.host}:{rank}" in balancer, balancer
            assert row.host in hosts, hosts
        for view in ("#rank-sparks", "#split", "#hosts"):  # no row behind a scrollbar
            shown = app.screen.query_one(view)
            assert shown.virtual_size.height <= shown.size.height, view
