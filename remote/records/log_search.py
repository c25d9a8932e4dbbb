"""Every rank's output of a run, read from this machine's copy and searched by regex.

The console's log panel keeps only its newest lines; what every rank and launcher printed is in
the run's local copy, one launcher log per host (``collected/<host>/logs/<host>/launcher.log``,
each rank's line prefixed with its rank as ``trainer.launch_contract`` makes it). This module
reads those files back as typed lines, searches them, and finds the first traceback or failed
worker; ``corral logs`` and the console's search (``/``, ``n``/``N``, ``t``) both call it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from profiles.user_errors import UsageError
from trainer.launch_contract import LOG_LINE_PREFIX, line_rank
from trainer.run_layout import RunLayout

FIRST_FAILURE = re.compile(r"Traceback \(most recent call last\):|\bfailed \(exitcode|"
                           r"ChildFailedError")
"""Where a failure's story starts: a Python traceback, or torchrun's word that a worker
failed (``failed (exitcode: 1)``, its ``ChildFailedError`` report)."""


@dataclass(frozen=True)
class RunLogLine:
    """One line of a host's launcher log in the run's copy."""

    host: str
    """The ``[[hosts]]`` name whose launcher log holds the line."""
    rank: int | None
    """The global rank that printed it; None for the launcher's own line (torchrun)."""
    number: int
    """Its line number in the host's launcher log (1 for the first line)."""
    text: str
    """The line without its rank prefix."""

    @property
    def source(self) -> str:
        """``host:rank`` or ``host:launcher``, as the console's log panel names a line."""
        return f"{self.host}:{'launcher' if self.rank is None else self.rank}"

    @property
    def line(self) -> str:
        """The line as the log panel shows it: its source, then its text."""
        return f"{self.source} {self.text}"


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
    """Every line of ``host``'s copied launcher log, in order (none when nothing was copied)."""
    path = host_log_path(run_dir, host)
    if not path.is_file():
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.rstrip("\n")
            match = LOG_LINE_PREFIX.match(text)
            if match is None:
                yield RunLogLine(host=host, rank=None, number=number, text=text)
            else:
                yield RunLogLine(host=host, rank=line_rank(match), number=number,
                                 text=text[match.end():])


def run_log_lines(run_dir: Path, hosts: Sequence[str]) -> list[RunLogLine]:
    """Every host's lines, host after host in the order of ``hosts`` (the launcher logs hold
    no times, so lines of different hosts are not interleaved)."""
    return [line for host in hosts for line in host_log_lines(run_dir, host)]


def search_lines(lines: Sequence[RunLogLine], pattern: re.Pattern[str]) -> list[int]:
    """The indexes in ``lines`` of the lines whose shown form (``RunLogLine.line``) matches."""
    return [i for i, line in enumerate(lines) if pattern.search(line.line)]


def first_failure(lines: Sequence[RunLogLine]) -> int | None:
    """The index of the first line that starts a traceback or names a failed worker."""
    return next((i for i, line in enumerate(lines) if FIRST_FAILURE.search(line.text)), None)
