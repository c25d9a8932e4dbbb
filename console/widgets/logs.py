"""Logs panel: every rank's and launcher's output, ``host:rank``-prefixed, filterable.

A line longer than the panel is wrapped (the continuation indented), never cut: a path or an
error message is read whole. ``z`` zooms the panel to the whole screen and back. Noise lines
(torch's INFO chatter and known warnings, ``LogEntry.noise``) are hidden until ``v`` shows
them; the title counts the hidden ones."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input

from console.model.records import LogEntry
from console.model.run import LOG_LINES, RunModel
from console.widgets.lines_view import LinesView

LEVEL_STYLES = {"info": "", "warning": "yellow", "error": "red"}
SOURCE_STYLE = "bold cyan"


def log_row(entry: LogEntry) -> Text:
    """``beta:1 loss 0.42``: the source in colour, then the text."""
    text = Text(entry.source, style=SOURCE_STYLE if entry.level == "info" else
                LEVEL_STYLES[entry.level])
    text.append(" ")
    text.append(entry.text, style=LEVEL_STYLES.get(entry.level, ""))
    return text


CONTINUATION_INDENT = 2
"""Cells a wrapped line's continuation rows are indented by."""


def wrapped_rows(row: Text, width: int) -> list[Text]:
    """``row`` as screen rows of at most ``width`` cells, the continuation rows indented."""
    if row.cell_len <= width or width <= 2 * CONTINUATION_INDENT:
        return [row]
    rows = [row[:width]]
    rest = row[width:]
    step = width - CONTINUATION_INDENT
    while rest.cell_len > 0:
        piece = Text(" " * CONTINUATION_INDENT)
        piece.append_text(rest[:step])
        rows.append(piece)
        rest = rest[step:]
    return rows


def matches(entry: LogEntry, pattern: str) -> bool:
    """Case-insensitive substring match on the whole prefixed line."""
    return not pattern or pattern.lower() in entry.line.lower()


class LogsPanel(Vertical):
    """The log lines that pass the filter; follows the newest line unless follow is off."""

    ALLOW_MAXIMIZE = True

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "toggle_follow", "Follow"),
        Binding("escape", "close_filter", "Close filter", show=False),
    ]

    def __init__(self, model: RunModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.pattern = ""
        self.show_noise = False
        """Show the noise lines too (``v``)."""
        self.shown: list[LogEntry] = []
        """The entries that pass the filter (and are not hidden noise), oldest first."""
        self.hidden = 0
        """Noise lines that pass the filter but are hidden (the title counts them)."""
        self.rows: list[Text] = []
        """``shown`` wrapped to the panel's width: the screen rows, oldest first."""
        self._rows_width = 0
        """The width ``rows`` were wrapped to (0: not yet)."""
        self._seen = 0
        self.border_title = self._title()
        self._subtitle_shown = ""

    def compose(self) -> ComposeResult:
        yield LinesView(row_count=lambda: len(self.rows),
                        row_text=lambda i, w: self.rows[i], follow=True,
                        signature=lambda: (self._seen, self.pattern, self.show_noise,
                                           self._rows_width),
                        id="log-lines")
        filter_input = Input(placeholder="filter (substring, Enter to keep, Esc to close)",
                             id="log-filter")
        filter_input.display = False
        yield filter_input

    @property
    def follow(self) -> bool:
        return self.query_one(LinesView).follow

    def focus_lines(self) -> None:
        """Give the keyboard to the log lines (``l``)."""
        self.query_one(LinesView).focus()

    def toggle_zoom(self) -> None:
        """Fill the whole screen with the logs (``z``), or put them back in their place."""
        if self.screen.maximized is self:
            self.screen.minimize()
        else:
            self.screen.maximize(self, container=False)
            self.focus_lines()

    def _wrap_width(self) -> int:
        """The cells a row may take: the view's width less the scrollbar's column, kept
        whether or not the scrollbar shows so that showing it never re-wraps everything."""
        return max(1, self.query_one(LinesView).size.width - 1)

    def _rewrap(self) -> None:
        """Wrap every shown entry anew (after a resize, a filter change or a trim)."""
        self._rows_width = self._wrap_width()
        self.rows = [r for e in self.shown for r in wrapped_rows(log_row(e), self._rows_width)]

    def on_resize(self) -> None:
        if self._wrap_width() != self._rows_width:
            self._rewrap()
            self.query_one(LinesView).sync()

    def open_filter(self) -> None:
        """Show the filter input and focus it (``/``)."""
        filter_input = self.query_one(Input)
        filter_input.display = True
        filter_input.value = self.pattern
        filter_input.focus()

    def set_filter(self, pattern: str) -> None:
        """Show only the lines containing ``pattern`` (case-insensitive); "" shows all."""
        self.pattern = pattern
        self._refilter()
        self.query_one(LinesView).sync()

    def toggle_noise(self) -> None:
        """Show the noise lines too, or hide them again (``v``)."""
        self.show_noise = not self.show_noise
        self._refilter()
        self.query_one(LinesView).sync()

    def _take(self, entries: Iterable[LogEntry]) -> list[LogEntry]:
        """The ``entries`` to show, counting the noise lines the filter passes but hides."""
        kept = []
        for entry in entries:
            if not matches(entry, self.pattern):
                continue
            if entry.noise and not self.show_noise:
                self.hidden += 1
            else:
                kept.append(entry)
        return kept

    def _refilter(self) -> None:
        """Choose the shown entries anew from the model's whole buffer."""
        self.hidden = 0
        self.shown = self._take(self.model.logs)
        self._seen = self.model.logs_total
        self._rewrap()
        self._update_subtitle()

    def action_toggle_follow(self) -> None:
        view = self.query_one(LinesView)
        view.follow = not view.follow
        self._update_subtitle()
        view.sync()

    def action_close_filter(self) -> None:
        filter_input = self.query_one(Input)
        if filter_input.display:
            filter_input.display = False
            self.focus_lines()

    @on(Input.Changed, "#log-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.set_filter(event.value)

    @on(Input.Submitted, "#log-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.set_filter(event.value)
        self.action_close_filter()

    def sync(self) -> None:
        """Take in the lines added since the last sync."""
        added = min(self.model.logs_total - self._seen, len(self.model.logs))
        self._seen = self.model.logs_total
        if added > 0:
            fresh = list(itertools.islice(reversed(self.model.logs), added))
            kept = self._take(reversed(fresh))
            self.shown.extend(kept)
            if len(self.shown) + self.hidden > 2 * LOG_LINES:
                self._refilter()  # back to the model's buffer: its newest LOG_LINES
            elif self._wrap_width() != self._rows_width:
                self._rewrap()
            else:
                for entry in kept:
                    self.rows.extend(wrapped_rows(log_row(entry), self._rows_width))
        self._update_subtitle()
        self.query_one(LinesView).sync()

    def _title(self) -> str:
        """``Logs``, and how many noise lines are hidden (and the key that shows them)."""
        if self.show_noise:
            return "Logs · noise shown (v hides)"
        return f"Logs · {self.hidden} noise hidden (v shows)" if self.hidden else "Logs"

    def _update_subtitle(self) -> None:
        title = self._title()
        if title != self.border_title:
            self.border_title = title
        parts = [f"filter: {self.pattern}"] if self.pattern else []
        parts.append("follow on" if self.follow else "follow off")
        subtitle = " · ".join(parts)
        if subtitle != self._subtitle_shown:  # setting it repaints the whole panel
            self._subtitle_shown = self.border_subtitle = subtitle
