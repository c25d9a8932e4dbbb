"""A run's events handed to the model a burst at a time.

A tailer hands a host's new lines over together (every poll, every 50 ms under a flood); the
stream yields them one by one without waiting in between. ``Burst`` collects what arrives
before the event loop turns and applies it in one ``RunModel.apply_all`` pass: the model
moves once per burst, not once per line, and the panels read the burst at their next refresh.
"""

from __future__ import annotations

import asyncio

from console.model.run import RunModel
from remote.api import RunEvent


class Burst:
    """Events waiting for the event loop's next turn; ``add`` them as they come."""

    def __init__(self, model: RunModel) -> None:
        self.model = model
        self.events: list[RunEvent] = []
        self.added = 0
        """Events added in all (the caller yields to the loop every so many)."""

    def add(self, event: RunEvent) -> int:
        """Keep ``event`` for this burst (the first schedules the burst's ``flush`` at the
        loop's next turn); the count added so far."""
        if not self.events:
            asyncio.get_running_loop().call_soon(self.flush)
        self.events.append(event)
        self.added += 1
        return self.added

    def flush(self) -> None:
        """Apply the burst's events to the model, in order (nothing when none wait)."""
        if self.events:
            events, self.events = self.events, []
            self.model.apply_all(events)
