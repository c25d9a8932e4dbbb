"""Which output lines a plain-terminal follower leaves to the log files when a run fails.

A failing rank prints its Python traceback, its peers print theirs (gloo's "Connection closed
by peer"), every rank of corral's trainer says its error once more, and torchrun's agent adds a
40-line ``ChildFailedError`` report. The run's status line already names the failed host, rank
and the error's last line (``remote.run.monitor``): printed again, these lines bury it. They
stay in every host's log files and in this machine's copy; only ``corral run`` / ``attach
--headless`` output leaves them out. A traceback is a block, not a line, so the decision needs
the lines before it: one ``TracebackFold`` per followed run, fed every output line in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from remote.api import LogLine

TORCH_RANK_PREFIX = re.compile(r"^\[rank\d+\]: ?")
"""torch's own prefix on what a rank prints to stderr from Python (``[rank1]: Traceback ...``),
under corral's; the line's indentation follows it."""

TRACEBACK_START = "Traceback (most recent call last):"
"""The first line of every Python traceback."""

CHAINED = re.compile(r"^(?:The above exception was the direct cause of the following exception:"
                     r"|During handling of the above exception, another exception occurred:)$")
"""The line between two chained tracebacks (the second one follows)."""

REPORT_RULE = re.compile(r"^={20,}$")
"""The rule that opens and closes torchrun's failure report under ``ChildFailedError:``."""

ELASTIC_AGENT = re.compile(r"^[WE]\d{4} [\d:.]+ \d+ \S*torch/distributed/elastic/\S+\] ")
"""torchrun's agent at warning or error level (``Sending process N closing signal SIGTERM``,
``failed (exitcode: 1) local_rank: 0``): how it ends the ranks after a failure."""

TRAINER_ERROR = "corral trainer: "
"""The line each rank of corral's trainer prints for a ``CorralError`` (trainer/__main__.py);
its end event carries the same words to the status line."""


@dataclass
class StreamState:
    """Where one rank's (or one launcher's) output stands."""

    in_traceback: bool = False
    """Inside a traceback's frames: the next unindented line is its exception."""
    expect_report: bool = False
    """The exception just ended was torchrun's ``ChildFailedError``: its report follows."""
    in_report: bool = False
    """Between the rules of torchrun's failure report."""
    last_hidden: bool = False
    """The previous line was left out: a blank line after it goes too."""


@dataclass
class TracebackFold:
    """Says which output lines to leave out, per stream (host and rank)."""

    streams: dict[tuple[str, int | None], StreamState] = field(default_factory=dict)

    def hides(self, line: LogLine) -> bool:
        """Whether ``line`` belongs to a traceback, torchrun's failure report or the trainer's
        repeated error line (all left to the log files)."""
        state = self.streams.setdefault((line.host, line.rank), StreamState())
        text = TORCH_RANK_PREFIX.sub("", line.text.rstrip(), count=1)
        hidden = self._hides(state, text) or (state.last_hidden and not text)
        state.last_hidden = hidden
        return hidden

    @staticmethod
    def _hides(state: StreamState, text: str) -> bool:
        if state.in_report or (state.expect_report and REPORT_RULE.match(text)):
            # The rule that opened the report does not close it; the next one does.
            state.in_report = not (state.in_report and REPORT_RULE.match(text))
            state.expect_report = False
            return True
        state.expect_report = False
        if text == TRACEBACK_START or CHAINED.match(text):
            state.in_traceback = True
            return True
        if state.in_traceback:
            if not text or text[0].isspace():
                return True  # a frame, its source line, or the blank before a chained one
            state.in_traceback = False  # the exception's line ends the block
            state.expect_report = text.endswith("ChildFailedError:")
            return True
        return text.startswith(TRAINER_ERROR) or bool(ELASTIC_AGENT.match(text))
