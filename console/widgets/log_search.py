"""The logs panel's search: a regex over every line of a run on disk, its matches stepped
through (``n``/``N``), and the first traceback or failed worker (``t``).

``LogSearch`` is plain state (no Textual): the lines read from the run's local copy
(``remote.api.run_log_lines``), the matches of one pattern, and the line in focus. The panel
(``console.widgets.logs``) draws every line with the matches marked and the focused line
reversed, and scrolls the focused line into view.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rich.text import Text

from remote.api import RunLogLine, collateral_sources, culprit_line, search_lines

MATCH_STYLE = "bold black on yellow"
FOCUS_STYLE = "reverse"
SOURCE_STYLE = "bold cyan"


class LogSource(Protocol):
    """Where the panel reads a run's lines and the command that follows a host's log
    (``console.session.Session``)."""

    def log_lines(self, run_id: str) -> list[RunLogLine]: ...

    def follow_command(self, run_id: str, host: str) -> str: ...


@dataclass
class LogSearch:
    """One search over a run's lines: the matches of ``pattern`` and the line in focus."""

    lines: Sequence[RunLogLine]
    """Every line of every host, as read when the search started."""
    pattern: re.Pattern[str] | None = None
    """What is searched for (None: the first-failure jump, which marks no text)."""
    matches: list[int] = field(default_factory=list)
    """Indexes in ``lines`` of the matching lines, in order."""
    focus: int | None = None
    """The index in ``matches`` of the match in view (None: no match)."""

    @classmethod
    def find(cls, lines: Sequence[RunLogLine], pattern: re.Pattern[str]) -> LogSearch:
        """Every line matching ``pattern``, the first one in focus."""
        found = search_lines(lines, pattern)
        return cls(lines, pattern, found, 0 if found else None)

    collateral: list[str] = field(default_factory=list)
    """The first-failure jump's sources whose errors follow from the culprit's."""

    @classmethod
    def failure(cls, lines: Sequence[RunLogLine], host: str | None = None,
                rank: int | None = None) -> LogSearch:
        """The culprit's first line of failure in focus (``remote.records.culprit``: rank
        ``rank`` on ``host`` as the run recorded it; none: no focus), the others' errors
        labelled collateral."""
        first = culprit_line(lines, host, rank)
        return cls(lines, None, [] if first is None else [first], None if first is None else 0,
                   collateral_sources(lines, first))

    @property
    def line(self) -> int | None:
        """The index in ``lines`` of the line in focus."""
        return None if self.focus is None else self.matches[self.focus]

    def step(self, forward: bool) -> None:
        """Move the focus to the next (or previous) match, round past either end."""
        if self.focus is not None:
            self.focus = (self.focus + (1 if forward else -1)) % len(self.matches)

    def position(self) -> str:
        """``match 3/17`` (or ``no match``), for the panel's subtitle."""
        if self.focus is None:
            return "no match" if self.pattern is not None else "no traceback or failed worker"
        if self.pattern is None:
            line = self.lines[self.matches[0]]
            also = (f" · collateral: {', '.join(self.collateral)}" if self.collateral else "")
            return f"first failure: {line.source} line {line.number}{also}"
        return f"match {self.focus + 1}/{len(self.matches)}"

    def row(self, index: int) -> Text:
        """Line ``index`` as the panel draws it: the matches marked, the focused line
        reversed."""
        line = self.lines[index]
        text = Text(line.source, style=SOURCE_STYLE)
        text.append(" ")
        text.append(line.text)
        if self.pattern is not None:
            text.highlight_regex(self.pattern, MATCH_STYLE)
        if index == self.line:
            text.stylize(FOCUS_STYLE)
        return text
