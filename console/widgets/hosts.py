"""Hosts and ranks panel: one row per rank (or per host before its ranks are known)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from rich.text import Text

from console.formatting import bar, cells, fmt_bytes, fmt_rate, gpu_peak_text
from console.model.records import RowView
from console.model.run import RunModel
from console.widgets.lines_view import LinesView
from console.widgets.packing import label_cells, line_count, packed_line, per_line

STATUS_STYLES = {
    "idle": "grey50", "connecting": "cyan", "pushing": "cyan", "starting": "cyan",
    "running": "green", "straggler": "yellow", "failed": "bold red", "done": "blue",
    "joining": "cyan", "left": "grey50",
}
STALE_STYLE = "grey50"


TOKENS = "tokens/step"
"""The column shown only for runs that share tokens (variable-length items)."""


@dataclass(frozen=True)
class Column:
    """A column of the table; narrow terminals drop the lowest-priority ones first."""

    title: str
    width: int
    justify: str
    priority: int
    """Lower is kept longer."""


COLUMNS = (
    Column("host", 10, "left", 0),
    Column("rank", 4, "right", 0),
    Column("device", 14, "left", 3),
    Column("backend", 7, "left", 4),
    Column("batch", 5, "right", 1),
    Column("samples/s", 9, "right", 0),
    Column(TOKENS, 11, "right", 1),
    Column("compute", 9, "left", 1),
    Column("resources", 16, "left", 2),
)
STATUS_MIN_WIDTH = 14


@functools.lru_cache(maxsize=64)
def visible_columns(width: int, tokens: bool = False) -> tuple[Column, ...]:
    """The columns that fit ``width`` cells next to a status column of useful width (the
    tokens per step only when ``tokens``: the run shares tokens)."""
    keep = [c for c in COLUMNS if tokens or c.title != TOKENS]
    for dropped in sorted(keep, key=lambda c: -c.priority):
        used = sum(c.width + 1 for c in keep)
        if used + STATUS_MIN_WIDTH <= width or dropped.priority == 0:
            break
        keep.remove(dropped)
    return tuple(keep)


def resources_text(view: RowView) -> str:
    """GPU utilisation and memory, or CPU use and resident memory."""
    row = view.rank_row
    if row is None:
        return ""
    if row.gpu_util is not None or row.gpu_mem_used is not None:
        util = "—" if row.gpu_util is None else f"{row.gpu_util:.0f}%"
        text = f"GPU {util} {fmt_bytes(row.gpu_mem_used)}/{fmt_bytes(row.gpu_mem_total)}"
        if row.gpu_peak_reserved is not None:
            text += f" peak {gpu_peak_text(row.gpu_peak_allocated, row.gpu_peak_reserved)}"
        return text
    if row.cpu_percent is not None or row.rss_bytes is not None:
        cpu = "—" if row.cpu_percent is None else f"{row.cpu_percent:.0f}%"
        return f"CPU {cpu} {fmt_bytes(row.rss_bytes)}"
    return ""


def row_values(view: RowView) -> dict[str, str]:
    """The text of each column for one row."""
    row = view.rank_row
    if row is None:
        return {"host": view.host, "rank": "—"}
    share = row.compute_share
    compute = "" if share is None else f"{bar(share, 4)} {share * 100:3.0f}%"
    return {
        "host": view.host, "rank": str(row.rank), "device": row.device,
        "backend": row.backend, "batch": "" if row.local_batch is None else str(row.local_batch),
        "samples/s": fmt_rate(row.samples_per_s) if row.samples_per_s is not None else "",
        TOKENS: fmt_rate(row.tokens) if row.tokens is not None else "",
        "compute": compute, "resources": resources_text(view),
    }


def render_row(view: RowView, width: int, tokens: bool = False) -> Text:
    """One row of the table at ``width`` cells (``tokens``: with the tokens per step)."""
    columns = visible_columns(width, tokens)
    values = row_values(view)
    text = cells(*((values.get(c.title, ""), c.width, c.justify) for c in columns))
    if view.stale:
        text.stylize(STALE_STYLE)
    words = status_words(view.status, view.reason, width - text.cell_len - 1)
    said = len(view.status) if words.startswith(view.status) else len(words)
    status = Text(words[:said], style=STATUS_STYLES.get(view.status, ""))
    status.append(words[said:], style=STALE_STYLE if view.stale else "")
    text.append(" ")
    text.append_text(status)
    return text


STEP_WORDS = re.compile(r" at step (\d+)")


def status_words(status: str, reason: str, room: int) -> str:
    """The status cell in ``room`` cells, by rule, never a step number cut: ``left at step
    197 (asked)`` (a reason that begins with its status says it once), else ``left @197
    (asked)``, else ``left @197``, else the reason's step alone (``joined @461``), else cut
    with ``…`` before any number it would cut (the logs panel holds it whole)."""
    if not reason:
        return status
    full = reason if reason.split(" ", 1)[0] == status else f"{status}: {reason}"
    short = STEP_WORDS.sub(r" @\1", full)
    alone = STEP_WORDS.sub(r" @\1", reason).split(" (", 1)[0] if STEP_WORDS.search(
        reason) else full
    for words in (full, short, short.split(" (", 1)[0], alone):
        if len(words) <= room:
            return words
    cut = full[:max(room - 1, len(status))]
    if full[len(cut):len(cut) + 1].isdigit():  # never half a number: drop it whole
        cut = cut.rstrip("0123456789@")
    return cut.rstrip() + "…"


def render_header(width: int, tokens: bool = False) -> Text:
    """The column titles."""
    columns = visible_columns(width, tokens)
    text = cells(*((c.title, c.width, c.justify) for c in columns))
    text.append(" status")
    text.stylize("bold")
    return text


COMPACT_RATE, COMPACT_STATUS = Column("smp/s", 6, "right", 0), 9
"""A compact row's samples/s column, and its status's fewest cells (``left @197`` fits)."""


def compact_label(view: RowView) -> str:
    """``beta:1`` (the host alone before its ranks are known)."""
    return view.host if view.rank_row is None else f"{view.host}:{view.rank_row.rank}"


def compact_row(view: RowView, width: int, label: int) -> Text:
    """``host3:3   35.0 running``: a row of the compact table (several to a line)."""
    text = cells((compact_label(view), label, "left"),
                 (row_values(view).get("samples/s", ""), COMPACT_RATE.width, "right"))
    if view.stale:
        text.stylize(STALE_STYLE)
    words = status_words(view.status, view.reason, width - text.cell_len - 1)
    said = len(view.status) if words.startswith(view.status) else len(words)
    text.append(" ")
    text.append(words[:said], style=STATUS_STYLES.get(view.status, ""))
    text.append(words[said:], style=STALE_STYLE if view.stale else "")
    return text


def compact_header(label: int) -> Text:
    """The compact table's titles, over one of its items."""
    text = cells(("rank", label, "left"), (COMPACT_RATE.title, COMPACT_RATE.width, "right"))
    text.append(" status")
    text.stylize("bold")
    return text


class HostsPanel(LinesView):
    """Every rank's host, device, batch, throughput (and tokens per step, when the run shares
    tokens), utilisation, resources and status; where one rank a line does not fit, several
    to a line with their host, rank, samples/s and status (compact rows)."""

    def __init__(self, model: RunModel, *, id: str | None = None) -> None:
        super().__init__(row_count=lambda: line_count(len(model.rank_and_host_rows()),
                                                      self._per_line),
                         row_text=self._row, header_text=self._header, id=id)
        self.model = model
        self.border_title = "Hosts & ranks"
        self._subtitle_shown = ""
        self._per_line = 1

    def _label_cells(self) -> int:
        return label_cells([compact_label(view) for view in self.model.rank_and_host_rows()])

    def _row(self, index: int, width: int) -> Text:
        views = self.model.rank_and_host_rows()
        if self._per_line == 1:
            return render_row(views[index], width, self.model.shares_tokens)
        label = self._label_cells()
        return packed_line(index, self._per_line, len(views), width,
                           lambda i, w: compact_row(views[i], w, label))

    def _header(self, width: int) -> Text:
        if self._per_line == 1:
            return render_header(width, self.model.shares_tokens)
        label = self._label_cells()
        return packed_line(0, self._per_line, self._per_line, width,
                           lambda i, w: compact_header(label))

    def _fit(self) -> None:
        """One rank a line while they fit the panel's height, else as few to a line as fit."""
        size = self.content_size
        count = len(self.model.rank_and_host_rows())
        least = self._label_cells() + COMPACT_RATE.width + COMPACT_STATUS + 2
        per = per_line(count, size.height - 1, size.width, least) if size.height > 1 else 1
        if per != self._per_line:
            self._per_line = per
            self._drawn_signature = None  # every line changes

    def on_resize(self) -> None:
        self._fit()

    def sync(self) -> None:
        self._fit()
        views = self.model.rank_and_host_rows()
        now = [view for view in views if view.status != "left"]  # the hosts in the run now
        ranks = sum(1 for view in now if view.rank_row is not None)
        hosts, left = len({view.host for view in now}), len(views) - len(now)
        subtitle = f"{hosts} hosts · {ranks} ranks" + (f" · {left} left" if left else "") + (
            " · run averages" if self.model.finished else "")
        if subtitle != self._subtitle_shown:  # setting it repaints the whole panel
            self._subtitle_shown = self.border_subtitle = subtitle
        super().sync()
