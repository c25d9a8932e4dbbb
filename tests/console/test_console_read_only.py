"""The read-only console (each tab of ``corral console --serve`` without the control link):
it shows the run like the full console, and every key that would change a run answers
"read-only view" and does nothing; quitting it leaves the run alone without asking."""

from __future__ import annotations

from console_helpers import make_app, wait_for

from console.controls import READ_ONLY
from console.widgets.modals import ConfirmScreen, QuitScreen
from tests.fake_runs import FakeController


async def test_keys_that_change_a_run_are_refused_and_the_run_goes_on() -> None:
    controller = FakeController(script_options={"hold_at": 5})
    app = make_app(controller, attach_run="fake-1", read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.session.model.live and app.session.model.step == 4)
        for key in ("x", "r", "s", "c", "p", "e", "j"):
            before = len(app._notifications)
            await pilot.press(key)
            await wait_for(pilot, lambda b=before: len(app._notifications) > b)
            note = list(app._notifications)[-1]
            assert note.message.startswith(READ_ONLY), (key, note.message)
            assert not isinstance(app.screen, ConfirmScreen), key
        assert app.session.model.next_policy == "dynamic"
        await pilot.press("q")  # leaves; never the question that offers to stop the run
        await wait_for(pilot, lambda: not app.is_running)
        assert not isinstance(app.screen, QuitScreen)
    assert [name for name, _ in controller.calls] == ["attach", "aclose"]
    assert controller.runs[0].stop_calls == 0


async def test_the_full_console_still_asks_before_it_stops() -> None:
    controller = FakeController(script_options={"hold_at": 5})
    app = make_app(controller, attach_run="fake-1")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.session.model.step == 4)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
