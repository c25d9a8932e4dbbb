"""The run screen's footer: the keys, compact on a narrow terminal so that more of them fit
(the app lists Help and Quit first, so those two always show)."""

from __future__ import annotations

from textual import events
from textual.widgets import Footer

COMPACT_BELOW = 120
"""Terminal width (cells) under which the keys are drawn without padding."""


class RunFooter(Footer):
    """Textual's footer, compact below ``COMPACT_BELOW`` cells."""

    def on_resize(self, event: events.Resize) -> None:
        self.compact = event.size.width < COMPACT_BELOW
