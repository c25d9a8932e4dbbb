"""corral's own terminal: where the console's keys come from, and text any encoding can show.

Keys: the console reads its keys from standard input, as Textual does. Where that is not a
terminal (``corral </dev/null``, ``printf s | corral``), piped bytes would be taken for key
presses (an ``s`` starts a run on every host) and the keys typed at the terminal never read.
So the console reads the controlling terminal (``/dev/tty``) instead, as ``less`` and ``vim -``
do: the person at it keeps the console they asked for, and the pipe is left unread. Without a
controlling terminal (cron, CI, ``nohup``) nobody can type: it refuses, naming the commands for
scripts.

Encoding: under a locale whose encoding cannot show box drawing (Latin-1, ASCII), every
character it cannot encode is written as an ASCII look-alike of the same width (``╭`` as ``+``,
``─`` as ``-``, ``…`` as ``.``), so the console's panels keep their layout and no command ends
in ``UnicodeEncodeError``. Rich's tables pick their ASCII boxes themselves from the encoding.
"""

from __future__ import annotations

import codecs
import os
import sys
import unicodedata

from profiles.user_errors import UsageError

TTY = "/dev/tty"
ERRORS = "corral-ascii"
"""The codec error handler ``ascii_fallbacks`` installs on the standard streams."""
_SHOWN = "╭─│●…"
"""Box drawing and marks corral prints: an encoding that has them needs no fallback."""
_LOOK_ALIKE = {"●": "*", "○": "o", "•": "*", "◆": "*", "…": ".", "→": ">", "←": "<",
               "↑": "^", "↓": "v", "✓": "v", "✔": "v", "✗": "x", "✘": "x", "×": "x",
               "≤": "<", "≥": ">", "≈": "~", "–": "-", "—": "-", "‘": "'", "’": "'",
               "“": '"', "”": '"', "▶": ">", "▸": ">", "▾": "v", "⏸": "=", "■": "#",
               "□": "o", "·": ".", "°": "o", "µ": "u", "±": "+"}


def keys_from_terminal() -> None:
    """Make the console's keys come from the terminal: standard input as it is when it is
    one, else the controlling terminal put in its place (the pipe or file there is not read).

    Raises ``UsageError`` without a controlling terminal, naming the commands for scripts."""
    if sys.stdin is not None and sys.stdin.isatty():
        return
    try:
        tty = os.open(TTY, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        raise UsageError(
            "the console reads keys from a terminal, and standard input is not one (nor is "
            "there a controlling terminal): for scripts use `corral run` to start a run and "
            "`corral attach --headless` to follow one", title="no terminal") from None
    try:
        os.dup2(tty, 0)
    finally:
        os.close(tty)


def ascii_for(char: str) -> str:
    """``char`` as ASCII of the width a terminal gives it (one cell, two for a wide one)."""
    code = ord(char)
    if 0x2500 <= code <= 0x257F:  # box drawing: its lines by name
        name = unicodedata.name(char, "")
        if "HORIZONTAL" in name and "VERTICAL" not in name:
            return "-"
        return "|" if "VERTICAL" in name and "HORIZONTAL" not in name else "+"
    if 0x2580 <= code <= 0x259F:  # block elements: bars and plots
        return "#"
    if 0x2800 <= code <= 0x28FF:  # braille dots: plots
        return " " if code == 0x2800 else "."
    if char in _LOOK_ALIKE:
        return _LOOK_ALIKE[char]
    plain = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
    if len(plain) == 1:
        return plain
    return "??" if unicodedata.east_asian_width(char) in ("W", "F") else "?"


def _fallback(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start:error.end]
    return "".join(ascii_for(c) for c in text), error.end


def can_show(encoding: str | None) -> bool:
    """Whether ``encoding`` has corral's box drawing and marks."""
    try:
        _SHOWN.encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def ascii_fallbacks() -> None:
    """Write what the standard streams' encoding cannot show as ASCII look-alikes
    (``ascii_for``) instead of raising or printing ``\\u256d``; nothing where it can."""
    codecs.register_error(ERRORS, _fallback)
    for stream in {id(s): s for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
                   if s is not None}.values():
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and not can_show(getattr(stream, "encoding", None)):
            reconfigure(errors=ERRORS)
