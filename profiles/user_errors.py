"""corral's user-facing errors: ``CorralError`` (a problem the user can fix) and ``UsageError``.

Every error corral reports to a user without a traceback is one of these. The module lives in
the lowest layer (``profiles``) only so that every package, including the ones pushed to the
hosts, can raise it without importing anything above itself; it is not about profiles.
"""

from __future__ import annotations


class CorralError(Exception):
    """A problem the user can fix: the message names the thing to fix.

    ``title`` is a short heading (shown as a notification title or the first word of a CLI
    error line); ``str(error)`` is the full explanation. Code that catches ``CorralError``
    prints it without a traceback and exits with ``exit_code``.
    """

    title: str = "corral error"
    exit_code: int = 1

    def __init__(self, message: str, *, title: str | None = None) -> None:
        super().__init__(message)
        if title is not None:
            self.title = title

    @property
    def message(self) -> str:
        """The full explanation, without the title."""
        return str(self.args[0]) if self.args else ""


class UsageError(CorralError):
    """Bad input from the user (flags, config, files): exit code 2, no traceback."""

    title = "invalid input"
    exit_code = 2
