"""Keys you can find (issue 79): every key of the console in the footer of a wide terminal,
every action in the command palette."""

from __future__ import annotations

from console_helpers import make_app, screen_text, settle, wait_for

from console.app import ConsoleApp
from tests.fake_runs import FakeController


async def test_every_key_is_in_the_footer_at_200_columns() -> None:
    app = make_app(FakeController())
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        # The footer draws its keys once its first resize has set its padding: wait for it.
        await wait_for(pilot, lambda: "Help" in screen_text(app).splitlines()[-1])
        footer = screen_text(app).splitlines()[-1]
    for key in ("? Help", "q Quit", "e Leave", "j Join", "t Traceback", "y Copy tail",
                "m Network", "z Zoom", "v Noise", "/ Search"):
        assert key in footer, (key, footer)


async def test_every_action_of_a_key_is_in_the_command_palette() -> None:
    app = make_app(FakeController())
    async with app.run_test() as pilot:
        await settle(pilot)
        callbacks = [c.callback for c in app.get_system_commands(app.screen)]
        for binding in ConsoleApp.BINDINGS:
            action = getattr(binding, "action", None)
            assert getattr(app, f"action_{action}") in callbacks, action
