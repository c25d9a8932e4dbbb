"""Logs panel: every rank's and launcher's output, ``host:rank``-prefixed, filtered and searched.

The panel keeps the newest lines of the run's stream; ``/`` filters them by a regular
expression as you type, and Enter searches the same expression over every line of the run on
disk (``console.widgets.log_search``): the panel then shows all of them with the matches marked,
``n``/``N`` step through the matches, ``t`` jumps to the first traceback or failed worker, ``y``
copies the ``ssh HOST 'tail -F FILE'`` that follows the focused line's host, Esc comes back. A
line longer than the panel is wrapped (the continuation indented), never cut: a path or an
error message is read whole. ``z`` zooms the panel to the whole screen and back. Noise lines
(torch's INFO chatter and known warnings, ``LogEntry.noise``) are hidden until ``v`` shows
them; the title counts the hidden ones."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input

from console.model.records import LogEntry
from console.model.run import LOG_LINES, RunModel
from console.widgets.lines_view import LinesView
from console.widgets.log_rows import LazyRows, wrapped_rows
from console.widgets.log_search import LogSearch, LogSource
from profiles.user_errors import CorralError
from remote.api import RunLogLine, compile_search, plain

LEVEL_STYLES = {"info": "", "warning": "yellow", "error": "red"}
SOURCE_STYLE = "bold cyan"


def log_row(entry: LogEntry) -> Text:
    """``beta:1 loss 0.42``: the source in colour, then the text."""
    text = Text(entry.source, style=SOURCE_STYLE if entry.level == "info" else
                LEVEL_STYLES[entry.level])
    text.append(" ")
    if "\x1b" in entry.text:  # the rank's own colours (every other control code is gone)
        text.append_text(Text.from_ansi(entry.text, style=LEVEL_STYLES.get(entry.level, "")))
    else:
        text.append(entry.text, style=LEVEL_STYLES.get(entry.level, ""))
    return text


def matches(entry: LogEntry, pattern: re.Pattern[str] | None) -> bool:
    """The regex found in the whole prefixed line (None: every line)."""
    return pattern is None or pattern.search(plain(entry.line)) is not None


def typed_pattern(text: str) -> re.Pattern[str] | None:
    """What the filter box holds as a regex (None: empty, or not yet a regex while typed)."""
    try:
        return re.compile(text) if text else None
    except re.error:
        return None


class LogsPanel(Vertical):
    """The log lines that pass the filter; follows the newest line unless follow is off."""

    ALLOW_MAXIMIZE = True

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "toggle_follow", "Follow"),
        Binding("escape", "close_filter", "Close filter", show=False),
        Binding("n", "step_match(True)", "Next match", show=False),
        Binding("N", "step_match(False)", "Previous match", show=False),
    ]

    def __init__(self, model: RunModel, *, source: LogSource | None = None,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.source = source
        """Where a search reads the run's lines on disk (None: searches are not offered)."""
        self.pattern = ""
        self._regex: re.Pattern[str] | None = None
        """``pattern`` compiled (None: empty or not a regular expression)."""
        self.search: LogSearch | None = None
        """The search shown instead of the newest lines (None: the newest lines)."""
        self._row_starts: list[int] = []
        """In a search: each line's first row in ``rows`` (and the row count at the end)."""
        self.show_noise = False
        """Show the noise lines too (``v``)."""
        self.shown: list[LogEntry] = []
        """The entries that pass the filter (and are not hidden noise), oldest first."""
        self.hidden = 0
        """Noise lines that pass the filter but are hidden (the title counts them)."""
        self._lazy = LazyRows(log_row)
        self.rows: Sequence[Text] = self._lazy
        """``shown`` wrapped to the panel's width: the screen rows, oldest first (built as
        they are drawn; a search's rows are a list)."""
        self._rows_width = 0
        """The width ``rows`` were wrapped to (0: not yet)."""
        self._seen = 0
        self._edited = 0
        """The model's ``logs_edited`` when the buffer was last shown."""
        self.border_title = self._title()
        self._subtitle_shown = ""

    def compose(self) -> ComposeResult:
        yield LinesView(row_count=lambda: len(self.rows),
                        row_text=lambda i, w: self.rows[i], follow=True,
                        signature=lambda: (self._seen, self._edited, self.pattern,
                                           self.show_noise,
                                           self._rows_width, id(self.search),
                                           self.search and self.search.focus),
                        id="log-lines")
        filter_input = Input(
            placeholder="regex: filters as you type; Enter searches every line on disk",
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
        """Wrap every shown entry (or searched line) anew (after a resize, a filter change, a
        trim or a search)."""
        self._rows_width = self._wrap_width()
        if self.search is None:
            self._lazy.reset(self.shown, self._rows_width)
            self.rows = self._lazy
            return
        rows: list[Text] = []
        self._row_starts = []
        for index in range(len(self.search.lines)):
            self._row_starts.append(len(rows))
            rows.extend(wrapped_rows(self.search.row(index), self._rows_width))
        self._row_starts.append(len(rows))
        self.rows = rows

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
        """Show only the lines where the regex ``pattern`` is found; "" shows all (while it is
        not a regex yet, every line)."""
        self.pattern = pattern
        self._regex = typed_pattern(pattern)
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
            if not matches(entry, self._regex):
                continue
            if entry.noise and not self.show_noise:
                self.hidden += 1
            else:
                kept.append(entry)
        return kept

    def _refilter(self) -> None:
        """Choose the shown entries anew from the model's whole buffer (back from a search)."""
        self.search = None
        self.hidden = 0
        self.shown = self._take(self.model.logs)
        self._seen, self._edited = self.model.logs_total, self.model.logs_edited
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
        else:
            self.end_search()

    @on(Input.Changed, "#log-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.set_filter(event.value)

    @on(Input.Submitted, "#log-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.set_filter(event.value)
        self.action_close_filter()
        if event.value:
            self.start_search(event.value)

    # ---------------------------------------------------------------- search on disk
    def start_search(self, pattern: str) -> None:
        """Search ``pattern`` over every line of the run on disk (Enter in the filter box)."""
        try:
            regex = compile_search(pattern, what="search")
        except CorralError as exc:
            self.notify(str(exc), title="bad regex", severity="error")
            return
        self._read_lines(lambda lines: LogSearch.find(lines, regex))

    def jump_to_failure(self) -> None:
        """Show every line of the run with the culprit's first traceback or failed worker in
        view (``remote.records.culprit``), the others' errors labelled collateral."""
        model = self.model
        self._read_lines(lambda lines: LogSearch.failure(lines, model.failed_host,
                                                         model.failed_rank))

    def _read_lines(self, make: Callable[[list[RunLogLine]], LogSearch]) -> None:
        run_id = self.model.run_id
        if self.source is None or run_id is None:
            self.notify("No run to search yet.", severity="warning")
            return
        self._load(self.source, run_id, make)

    @work(thread=True, exclusive=True, group="log-search")
    def _load(self, source: LogSource, run_id: str,
              make: Callable[[list[RunLogLine]], LogSearch]) -> None:
        """Read the run's lines off the UI's thread, then show the search."""
        try:
            search = make(source.log_lines(run_id))
        except (CorralError, OSError) as exc:  # not recorded here, or its copy unreadable
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.app.call_from_thread(self.show_search, search)

    def show_search(self, search: LogSearch) -> None:
        """Show ``search``'s lines instead of the newest ones, its focused line in view."""
        self.search = search
        self._rewrap()
        view = self.query_one(LinesView)
        view.follow = False
        self._update_subtitle()
        view.sync()
        self._scroll_to_focus()
        self.focus_lines()

    def _scroll_to_focus(self) -> None:
        line = self.search.line if self.search is not None else None
        if line is not None:
            view = self.query_one(LinesView)
            top = max(0, self._row_starts[line] - view.size.height // 3)
            view.scroll_to(y=top, animate=False, immediate=True)

    def action_step_match(self, forward: bool) -> None:
        """Focus the next (``n``) or previous (``N``) match of the search."""
        search = self.search
        if search is None or search.line is None:
            return
        rows = self.rows
        if not isinstance(rows, list):  # no search's rows
            return
        before = search.line
        search.step(forward)
        for line in (before, search.line):  # only their rows change: same text, same wrap
            start, end = self._row_starts[line], self._row_starts[line + 1]
            rows[start:end] = wrapped_rows(search.row(line), self._rows_width)
        self._update_subtitle()
        self.query_one(LinesView).sync()
        self._scroll_to_focus()

    def follow_command(self) -> str | None:
        """The command that follows the host of the focused line (else the first host) live,
        or None without a run."""
        run_id = self.model.run_id
        if self.source is None or run_id is None or not self.model.hosts:
            return None
        search = self.search
        host = (search.lines[search.line].host if search is not None and search.line is not None
                else next(iter(self.model.hosts)))
        return self.source.follow_command(run_id, host)

    def end_search(self) -> bool:
        """Back to the newest lines (Esc); False when no search was shown."""
        if self.search is None:
            return False
        self._refilter()
        view = self.query_one(LinesView)
        view.follow = True
        self._update_subtitle()
        view.sync()
        return True

    def sync(self) -> None:
        """Take in the lines added since the last sync (a search shows what it read)."""
        if self.search is not None:
            return
        if self._edited != self.model.logs_edited:  # a kept line changed: show them anew
            self._refilter()
            self.query_one(LinesView).sync()
            return
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
                self._lazy.extend(kept)
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
        if self.search is not None:
            parts = [self.search.position(), "n/N t y · Esc back"]
        else:
            parts = [f"filter: {self.pattern}"] if self.pattern else []
            parts.append("follow on" if self.follow else "follow off")
        subtitle = " · ".join(parts)
        if subtitle != self._subtitle_shown:  # setting it repaints the whole panel
            self._subtitle_shown = self.border_subtitle = subtitle
