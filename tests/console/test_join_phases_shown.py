"""A join's phases (check, push, start, admission) are shown where the join is: the Balancer's
line for it in the console, and the follower's log line (issue 78: join cost shown)."""

from __future__ import annotations

from console_helpers import make_app, screen_text, settle, wait_for

from console.widgets.balancer import change_row
from remote.api import RankEvent, RunEvent
from tests.fake_runs import scripted_run
from trainer.events import MembershipEvent

PHASES = {"check": 1.5, "push": 0.5, "start": 3.25, "admission": 0.8}
SHOWN = "check 1.5 s, push 0.5 s, start 3.2 s, admission 0.8 s"


def joined(t: float) -> MembershipEvent:
    return MembershipEvent(t=t, rank=0, generation=1, step=9, change="joined",
                           hosts=("gamma",), world_size=3, members=(0, 1, 2),
                           seconds_to_step=0.8, phases=PHASES)


def join_run(run_id: str, **options: object) -> list[RunEvent | str]:
    """The scripted run with gamma's join at step 10, its event carrying the phases."""
    script = scripted_run(run_id, **options)  # type: ignore[arg-type]
    at = next(i for i, e in enumerate(script) if isinstance(e, RankEvent)
              and getattr(e.event, "step", 0) >= 10)
    return [*script[:at], RankEvent(host="alpha", event=joined(1_000_010.0)), *script[at:]]


def test_the_join_line_names_its_phases_wide_and_not_a_leave() -> None:
    line = change_row(joined(0.0), 160).plain
    assert "gamma joined  3 ranks  " + SHOWN in line
    left = MembershipEvent(t=0.0, rank=0, generation=2, step=12, change="left",
                           hosts=("gamma",), cause="asked", world_size=2, members=(0, 1))
    assert "check" not in change_row(left, 160).plain


async def test_the_console_shows_a_joins_phases_in_the_balancer() -> None:
    from tests.fake_runs import FakeController

    app = make_app(FakeController(script=join_run))
    async with app.run_test(size=(200, 50)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.session.model.state == "completed")
        await settle(pilot)
        assert SHOWN in screen_text(app)
