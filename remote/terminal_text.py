"""Rank output as a terminal would show it: the one place that turns what a rank wrote into
the lines every seat shows (the console's log panel, ``corral logs``, ``corral run``'s output,
the report's last lines, notices).

What a rank writes reaches corral through torchrun's tee (``--tee 3``): torch reads each rank's
output file in Python's universal-newline mode, so every ``\\r`` of a progress bar (tqdm,
Hugging Face's Trainer, Lightning) ends a line there, and a line read before its end is written
at once, under its ``[rankN+M]:`` prefix, with the next read's prefix glued after it. Here:

- ``split_ranks``: a launcher-log line's pieces, one per ``[rankN+M]:`` wherever it stands;
- ``screen_text``: a line's shown text: a ``\\r`` run reduced to its latest state, tabs
  expanded to 8-column stops, colours (SGR) kept, every other control sequence (clear screen,
  cursor moves, titles and other OSC strings, C0 controls) removed;
- ``plain``: the text without colours, for a seat that cannot show them;
- ``bar_key``: whether a line is a progress bar's state (and which bar);
- ``RankScreen``: a host's launcher-log lines in, shown lines out: fragments joined per rank,
  a bar's states marked so that each replaces the one before, the blank lines a bar's ``\\r``
  leaves behind dropped;
- ``settle``: a whole log's shown lines with each bar at its last state (what a file shows);
- ``fold_ranks``: identical lines of several ranks as one (shown as ``ranks 0–7 text``).

Pure: no file, no clock, no terminal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")

RANK_PREFIX = re.compile(r"\[rank(\d+)\+(\d+)\]:")
"""torchrun's prefix of a rank's teed line (``trainer.launch_contract.log_line_prefix``),
matched anywhere in a line: a piece read before its line ended has the next piece glued on.
(torch's own ``[rankN]:`` before a rank's traceback lines is the rank's text.)"""
OLD_RANK_PREFIX = re.compile(r"^\[rank(\d+)\]:")
"""The prefix of launches before ranks were numbered in host order, at a line's start only."""

SGR = re.compile(r"\x1b\[[0-9;:]*m")
"""A colour or text attribute (Select Graphic Rendition): kept where the seat shows colour."""

CONTROL = re.compile(
    r"(\x1b\[[0-9;:]*m)"  # SGR, matched first to be kept
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: a window title, a hyperlink, a clipboard write
    r"|\x1b[P^_X][^\x1b]*(?:\x1b\\)?"  # DCS, PM, APC, SOS strings
    r"|\x1b\[[0-?]*[ -/]*[@-~]"  # CSI but SGR: clear screen, cursor moves, modes
    r"|\x1b[ -/]*[0-~]"  # two-byte escapes (charset selection, save/restore cursor, reset)
    r"|\x1b"  # a lone ESC
    r"|[\x00-\x08\x0b-\x1f\x7f]"  # C0 controls but tab and newline (bell, backspace, ...)
)
"""Every control sequence (group 1: SGR, kept; the others removed, so that no seat clears,
moves or retitles)."""

TAB_STOP = 8
"""Columns between tab stops, a terminal's default."""

TQDM_BAR = re.compile(r"^(?P<key>.*?)\s*\d{1,3}%\|[^|]*\|\s*\S+/\S+(?:\s*\[|\s*$)")
"""A tqdm-style bar with a total (tqdm, Hugging Face's Trainer, Lightning, accelerate):
``epoch 0:  50%|█████     | 20/40 [00:01<00:01, 17.1it/s, loss=0.3]``; ``key`` its description."""
TQDM_COUNTER = re.compile(r"^(?P<key>.*?)\s*\d+(?:\.\d+)?[kMGTP]?(?:it|[A-Za-z]+)? "
                          r"\[\d+:\d\d(?::\d\d)?, ")
"""A tqdm counter without a total: ``batches: 120it [00:04, 27.3it/s]``."""


def split_ranks(line: str) -> list[tuple[int | None, str, bool]]:
    """One launcher-log line as ``(rank, text, ended)`` pieces, in order.

    ``rank``: the global rank a ``[rankN+M]:`` prefix names (N + M), None for the launcher's
    own text before any prefix (left out when empty and a prefix follows). ``ended``: the
    piece ends the line (only the last one); the others were read before their line ended.
    """
    if "[rank" not in line:
        return [(None, line, True)]
    if line.find("[rank", 1) < 0:  # the usual line: one prefix, at its start (or none)
        match = RANK_PREFIX.match(line) or OLD_RANK_PREFIX.match(line)
        if match is None:
            return [(None, line, True)]
        rank = int(match.group(1)) + (int(match.group(2)) if match.re.groups == 2 else 0)
        return [(rank, line[match.end():], True)]
    pieces: list[tuple[int | None, str, bool]] = []
    matches = list(RANK_PREFIX.finditer(line)) or list(OLD_RANK_PREFIX.finditer(line))
    if not matches or matches[0].start() > 0:
        head = line[: matches[0].start()] if matches else line
        pieces.append((None, head, not matches))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        rank = int(match.group(1)) + (int(match.group(2)) if match.re.groups == 2 else 0)
        pieces.append((rank, line[match.end():end], i + 1 == len(matches)))
    return pieces


def _expand_tabs(text: str) -> str:
    """Tabs to spaces up to the next stop, counting only shown characters (not SGR)."""
    out: list[str] = []
    column = 0
    for part in re.split(f"({SGR.pattern})", text):
        if SGR.fullmatch(part):
            out.append(part)
            continue
        for char in part:
            if char == "\t":
                spaces = TAB_STOP - column % TAB_STOP
                out.append(" " * spaces)
                column += spaces
            else:
                out.append(char)
                column += 1
    return "".join(out)


_NEEDS_CLEANING = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _keep_sgr(match: re.Match[str]) -> str:
    return match.group(1) or ""


def screen_text(raw: str) -> str:
    """``raw`` (one line, no newline) as a terminal leaves it: after its last ``\\r`` (the
    latest state of what the line redrew; a trailing ``\\r`` redraws nothing), colours kept,
    tabs expanded, every other control sequence removed."""
    text = raw
    if "\r" in raw:
        states = [part for part in raw.split("\r") if part]
        text = states[-1] if states else ""
    text = CONTROL.sub(_keep_sgr, text) if _NEEDS_CLEANING.search(text) else text
    return _expand_tabs(text) if "\t" in text else text


def plain(text: str) -> str:
    """``text`` without its colours (a pipe, a file, a notice, ``NO_COLOR``)."""
    return SGR.sub("", text) if "\x1b" in text else text


def bar_key(text: str) -> str | None:
    """The bar a progress bar's state belongs to (its description, ``""`` when none), or None
    when ``text`` (shown text) is no bar's state."""
    shown = plain(text)
    match = (TQDM_BAR.match(shown) if "%|" in shown
             else TQDM_COUNTER.match(shown) if " [" in shown else None)
    return match.group("key").strip() if match else None


class ShownLine(NamedTuple):
    """One line as a seat shows it (a named tuple: a flood makes thousands a second)."""

    rank: int | None
    """The global rank that printed it; None for the launcher's own line."""
    text: str
    """Its shown text (``screen_text``): colours kept, other controls removed."""
    bar: bool = False
    """A progress bar's state."""
    replaces: bool = False
    """It replaces this rank's newest bar state (an earlier state of the same bar)."""


BAR_COUNT = re.compile(r"(\d+)(?:/(\S+))?(?:it)? ?\[|(\d+)/(\S+)\s*$")
"""A bar state's count and total (``20/40 [``, ``120it [``): a bar whose count goes back, or
whose total differs, is another bar (Hugging Face's evaluation bar inside its training bar:
both without a description)."""


def _bar_count(text: str) -> tuple[int, str]:
    found = BAR_COUNT.search(plain(text))
    if found is None:
        return 0, ""
    return int(found.group(1) or found.group(3)), found.group(2) or found.group(4) or ""


@dataclass
class RankScreen:
    """One host's launcher-log lines in, shown lines out (``feed``), in the order shown.

    A piece read before its line ended waits for the rest of its rank's line, unless it is a
    whole bar state (a bar writes each state at once; its rank's other stream may come next).
    A bar's state replaces the rank's newest state of the same bar (``ShownLine.replaces``)
    wherever that line is, as a terminal redraws a bar under ``tqdm.write``; a state with
    another description, or whose count went back, starts a new bar. A rank that crashed
    mid-bar leaves it at its last state. The blank lines a bar's ``\\r`` leaves behind (those
    before a bar state) are dropped; another blank line shows before the rank's next line.
    """

    _fragment: dict[int | None, str] = field(default_factory=dict)
    _blanks: dict[int | None, int] = field(default_factory=dict)
    _bar: dict[int | None, tuple[str, int, str]] = field(default_factory=dict)

    def feed(self, line: str) -> list[ShownLine]:
        """The shown lines one launcher-log line (without its newline) completes."""
        usual = _usual_line(line)
        if usual is not None and usual[0] not in self._fragment and usual[0] not in self._blanks:
            return [ShownLine(*usual)]
        shown: list[ShownLine] = []
        for rank, text, ended in split_ranks(line):
            pending = self._fragment.pop(rank, "") + text
            if ended or bar_key(screen_text(pending)) is not None:
                shown.extend(self._complete(rank, pending))
            else:
                self._fragment[rank] = pending
        return shown

    def _complete(self, rank: int | None, raw: str) -> list[ShownLine]:
        text = screen_text(raw)
        if not text.strip() or not plain(text).strip():
            self._blanks[rank] = self._blanks.get(rank, 0) + 1
            return []
        key = bar_key(text)
        if key is None:
            blanks = [ShownLine(rank, "") for _ in range(self._blanks.pop(rank, 0))]
            return [*blanks, ShownLine(rank, text)]
        self._blanks.pop(rank, None)
        (count, total), before = _bar_count(text), self._bar.get(rank)
        replaces = before is not None and before[::2] == (key, total) and before[1] <= count
        self._bar[rank] = (key, count, total)
        return [ShownLine(rank, text, bar=True, replaces=replaces)]


PLAIN_RANK_LINE = re.compile(r"\[rank(\d+)\+(\d+)\]:([^\x00-\x1f\x7f\[]*)")
"""The usual line of a flood: one prefix at its start, then text with no control code, no
``[`` (no other prefix, no counter bar's ``[``) and so no way to be anything but itself."""


def _usual_line(line: str) -> tuple[int, str] | None:
    """``(rank, text)`` of a whole rank line that needs no screen work (no control code, no
    bar, no second prefix, not blank), or None: the general path decides."""
    match = PLAIN_RANK_LINE.fullmatch(line)
    if match is None or "%|" in line:
        return None
    text = match.group(3)
    if not text or text.isspace():
        return None
    return int(match.group(1)) + int(match.group(2)), text


def settle(shown: Iterable[tuple[ShownLine, T]]) -> list[tuple[ShownLine, T]]:
    """Shown lines, each with what the caller keeps beside it (a line number), with every
    bar at its last state: a line that ``replaces`` takes the place of its rank's newest bar."""
    out: list[tuple[ShownLine, T]] = []
    bars: dict[int | None, int] = {}
    for line, extra in shown:
        if line.replaces and line.rank in bars:
            out[bars[line.rank]] = (line, extra)
            continue
        if line.bar:
            bars[line.rank] = len(out)
        out.append((line, extra))
    return out


def ranks_label(ranks: Sequence[int]) -> str:
    """``ranks 0–2, 5``: the ranks, consecutive ones as a range (en dash)."""
    parts: list[str] = []
    ordered = sorted(set(ranks))
    start = prev = ordered[0]
    for rank in [*ordered[1:], None]:
        if rank is not None and rank == prev + 1:
            prev = rank
            continue
        parts.append(str(start) if start == prev else f"{start}–{prev}")
        if rank is not None:
            start = prev = rank
    return f"ranks {', '.join(parts)}"


@dataclass(frozen=True)
class FoldedLine(Generic[T]):
    """A line of ``fold_ranks``: the first ``item`` with its text, the ranks that said it."""

    item: T
    ranks: tuple[int, ...]


def fold_ranks(items: Sequence[T], key: Sequence[tuple[int | None, str]]
               ) -> list[FoldedLine[T]]:
    """``items`` with identical lines of different ranks as one, where the first was.

    ``key[i]``: item i's (rank, plain text). The n-th time rank r says a text is the same line
    as the n-th time another rank says it; a launcher's line (rank None), a blank line and a
    bar's state are never folded.
    """
    out: list[FoldedLine[T]] = []
    said: dict[tuple[int, str], int] = {}
    place: dict[tuple[str, int], int] = {}
    for item, (rank, text) in zip(items, key, strict=True):
        if rank is None or not text.strip() or bar_key(text) is not None:
            out.append(FoldedLine(item, () if rank is None else (rank,)))
            continue
        nth = said.get((rank, text), 0)
        said[(rank, text)] = nth + 1
        where = place.get((text, nth))
        if where is not None and rank not in out[where].ranks:
            out[where] = replace(out[where], ranks=(*out[where].ranks, rank))
            continue
        place[(text, nth)] = len(out)
        out.append(FoldedLine(item, (rank,)))
    return out
