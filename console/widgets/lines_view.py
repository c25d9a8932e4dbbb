"""``LinesView``: the panels' scrollable list of one-line rows.

It renders only the rows on screen (Textual's line API), from a callback, so a
panel with hundreds of ranks costs the same to redraw as one with three.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.style import Style
from rich.text import Text
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip


class LinesView(ScrollView):
    """A scrollable list of one-line ``Text`` rows, with an optional fixed header line."""

    DEFAULT_CSS = """
    LinesView { height: 1fr; overflow-x: hidden; scrollbar-size-vertical: 1; }
    """

    def __init__(
        self, *, row_count: Callable[[], int], row_text: Callable[[int, int], Text],
        header_text: Callable[[int], Text] | None = None, follow: bool = False,
        signature: Callable[[], object] | None = None,
        id: str | None = None, classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self._row_count = row_count
        """How many rows there are now."""
        self._row_text = row_text
        """Row ``index``'s text at ``width`` cells."""
        self._header_text = header_text
        """The fixed first line at ``width`` cells (None: no header line)."""
        self._signature = signature
        """What the rows depend on: ``sync`` redraws only when it (or the size) changed."""
        self._drawn_signature: object = None
        self.follow = follow
        """Keep the newest (last) row in view as rows are added."""
        self._pass_style: Style | None = None
        self._painted: list[Text | None] = []
        """Each screen line's text as of the last sync (compared to repaint only changes)."""
        self._painted_view: tuple[int, Size, Size] | None = None

    def sync(self) -> None:
        """Pick up a changed row count and redraw the visible rows that changed."""
        if self._signature is not None:
            drawn = (self._signature(), self.size, self.follow)
            if drawn == self._drawn_signature:
                return
            self._drawn_signature = drawn
        line_count = self._row_count() + (1 if self._header_text else 0)
        width = self.scrollable_content_region.width
        size = Size(width, line_count)
        if self.virtual_size != size:
            self._set_virtual_size(size)
        if self.follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self._repaint_changed()

    def on_resize(self) -> None:
        """A following view that got shorter (a panel gave its lines to compact rows above
        it) keeps its newest row in view."""
        if self.follow:
            self.call_after_refresh(self.scroll_end, animate=False, x_axis=False)

    def _repaint_changed(self) -> None:
        """Repaint only the screen lines whose text changed since the last sync.

        Most rows of a large run look the same from one tick to the next; repainting every
        line costs the screen's compositor far more than building the rows' text to compare.
        After a scroll or a resize every line is repainted.
        """
        view = self._view()
        texts = [self._text_at(y, view) for y in range(self.size.height)]
        if view != self._painted_view or len(texts) != len(self._painted):
            self.refresh()
        else:
            top = self.scroll_offset.y
            for y, (old, new) in enumerate(zip(self._painted, texts, strict=True)):
                if old != new:
                    self.refresh_line(top + y)
        self._painted_view, self._painted = view, texts

    def _view(self) -> tuple[int, Size, Size]:
        """What maps screen lines to rows: the scroll position and the sizes."""
        return self.scroll_offset.y, self.size, self.virtual_size

    def _text_at(self, y: int, view: tuple[int, Size, Size]) -> Text | None:
        """The text of screen line ``y`` (None past the last row)."""
        width = self.scrollable_content_region.width
        if self._header_text is not None:
            if y == 0:
                return self._header_text(width)
            y -= 1
        index = view[0] + y
        if index < 0 or index >= self._row_count():
            return None
        return self._row_text(index, width)

    def _set_virtual_size(self, size: Size) -> None:
        """Take a new row count, skipping the screen's layout pass when it cannot move anything.

        A growing list (the logs, many times a second) keeps the same width and keeps needing
        its scrollbar: only the scrollbar's thumb changes, so update that instead of laying the
        whole screen out again.
        """
        old = self.virtual_size
        height = self.scrollable_content_region.height
        if (self.is_mounted and size.width == old.width and self.show_vertical_scrollbar
                and old.height > height and size.height > height):
            self.set_reactive(LinesView.virtual_size, size)
            self._scroll_update(size)
        else:
            self.virtual_size = size
            # Whether the scrollbar shows decides whether the view may scroll at all: decide it
            # now, or a follow scroll issued before the next layout pass is dropped.
            self._scroll_update(size)

    def render_lines(self, crop: Region) -> list[Strip]:
        # The widget's style is the same for every line of one pass: look it up once.
        self._pass_style = self.rich_style
        try:
            return super().render_lines(crop)
        finally:
            self._pass_style = None

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        style = self._pass_style if self._pass_style is not None else self.rich_style
        view = self._view()
        text = self._text_at(y, view)
        if view == self._painted_view and y < len(self._painted):
            self._painted[y] = text  # what is on screen now: the next sync compares with it
        if text is None:
            return Strip.blank(width, style)
        return self._strip(text, width, style)

    def _strip(self, text: Text, width: int, style: object) -> Strip:
        text.no_wrap = True
        segments = [s for s in text.render(self.app.console) if s.text != "\n"]
        strip = Strip(segments).crop_extend(0, width, None)
        return strip.apply_style(style)  # type: ignore[arg-type]
