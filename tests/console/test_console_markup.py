"""A message that names a cluster.toml section (``[cluster] name``) reaches the console's
notification as written: it is not taken for markup and dropped."""

from __future__ import annotations

from console_helpers import make_app
from textual.content import Content

from profiles.user_errors import CorralError

MESSAGE = "[cluster] name: too long; [run] steps = [bold]"


async def test_an_error_naming_a_section_keeps_the_brackets() -> None:
    app = make_app()
    async with app.run_test(size=(160, 50)) as pilot:
        app.render_effects(app.controls.show_error(CorralError(MESSAGE)))
        await pilot.pause()
        shown = [Content.from_markup(n.message).plain if n.markup else n.message
                 for n in app._notifications]  # what the toast renders
    assert shown == [MESSAGE]
