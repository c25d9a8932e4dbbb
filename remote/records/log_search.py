"""Every rank's output of a run, read from this machine's copy and searched by regex.

The console's log panel keeps only its newest lines; what every rank and launcher printed is in
the run's local copy, one launcher log per host (``collected/<host>/logs/<host>/launcher.log``,
each rank's line prefixed with its rank as ``trainer.launch_contract`` makes it). This module
reads those files back as typed lines and searches them; ``corral logs`` and the console's
search (``/``, ``n``/``N``) both call it (``remote.records.culprit`` finds where the failure
that caused the others starts: ``t``, ``--failure``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from profiles.user_errors import UsageError
from remote.terminal_text import RankScreen, ShownLine, fold_ranks, plain, ranks_label, settle
from trainer.run_layout import RunLayout

FIRST_FAILURE = re.compile(r"Traceback \(most recent call last\):|\bfailed \(exitcode|"
                           r"ChildFailedError")
"""Where a failure's story starts: a Python traceback, or torchrun's word that a worker
failed (``failed (exitcode: 1)``, its ``ChildFailedError`` report)."""


@dataclass(frozen=True)
class RunLogLine:
    """One line of a host's launcher log in the run's copy, as a terminal shows it
    (``remote.terminal_text``: a bar at its last state, colours kept, other controls gone)."""

    host: str
    """The ``[[hosts]]`` name whose launcher log holds the line."""
    rank: int | None
    """The global rank that printed it; None for the launcher's own line (torchrun)."""
    number: int
    """The line number in the host's launcher log where it ends (1 for the first line)."""
    text: str
    """The line without its rank prefix (colours as SGR codes: ``plain`` strips them)."""
    ranks: tuple[int, ...] = ()
    """Every rank that printed this same line, when more than one did (``run_log_lines``)."""

    @property
    def source(self) -> str:
        """``host:rank``, ``host:launcher`` or ``ranks 0–7`` (the console's log panel's)."""
        if len(self.ranks) > 1:
            return ranks_label(self.ranks)
        return f"{self.host}:{'launcher' if self.rank is None else self.rank}"

    @property
    def line(self) -> str:
        """The line as the log panel shows it: its source, then its text (no colours)."""
        return f"{self.source} {plain(self.text)}"


def compile_search(pattern: str, *, what: str = "--grep") -> re.Pattern[str]:
    """``pattern`` as a regular expression; a ``UsageError`` naming ``what`` and the mistake
    when it is not one."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{what} {pattern!r} is not a regular expression: {exc}",
                         title="bad regex") from None


def host_log_path(run_dir: Path, host: str) -> Path:
    """The copy of ``host``'s launcher log inside the local run directory ``run_dir``."""
    return Path(RunLayout(RunLayout(run_dir).collected(host)).launcher_log(host))


def host_log_lines(run_dir: Path, host: str) -> Iterator[RunLogLine]:
    """Every line of ``host``'s copied launcher log as shown, in order (none when nothing
    was copied): torchrun's prefixes split off wherever they stand, each bar at its last
    state."""
    path = host_log_path(run_dir, host)
    if not path.is_file():
        return
    screen = RankScreen()
    shown: list[tuple[ShownLine, int]] = []
    with open(path, encoding="utf-8", errors="replace", newline="\n") as handle:
        for number, raw in enumerate(handle, start=1):
            shown.extend((line, number) for line in screen.feed(raw.rstrip("\n")))
    for line, number in settle(shown):
        yield RunLogLine(host=host, rank=line.rank, number=number, text=line.text)


def run_log_lines(run_dir: Path, hosts: Sequence[str]) -> list[RunLogLine]:
    """Every host's lines, host after host in the order of ``hosts`` (the launcher logs hold
    no times, so lines of different hosts are not interleaved), a line several ranks printed
    alike once, where the first was (``RunLogLine.ranks``) — but never a traceback's first
    line or a failed-worker line: each rank's failure starts where it did
    (``remote.records.culprit`` reads it there)."""
    lines = [line for host in hosts for line in host_log_lines(run_dir, host)]
    folded = fold_ranks(lines, [(None if FIRST_FAILURE.search(line.text) else line.rank,
                                 plain(line.text)) for line in lines])
    return [replace(f.item, ranks=f.ranks) if len(f.ranks) > 1 else f.item for f in folded]


def search_lines(lines: Sequence[RunLogLine], pattern: re.Pattern[str]) -> list[int]:
    """The indexes in ``lines`` of the lines whose shown form (``RunLogLine.line``) matches."""
    return [i for i, line in enumerate(lines) if pattern.search(line.line)]

