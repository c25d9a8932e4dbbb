"""A finished (or running) run as this machine recorded it: ``run.json`` and the event copy.

The follower copies every host's event files to ``<run dir>/collected/<host>/metrics/``
(``remote.run.stream``). Reports, TensorBoard files and the console's runs screen are all built
from that copy, so they need nothing from the hosts and work for runs of any age.

Lines are kept as typed events (``trainer.events``): every reader reads their fields, never the
JSON. A kind this version does not know is skipped (so are fields it does not know), and a
line that is not a valid event is skipped and counted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from remote.log_noise import is_noise
from remote.records.culprit import fold_frames
from remote.records.log_search import host_log_lines, host_log_path
from remote.records.runs import RunInfo, read_run_info_at
from remote.terminal_text import plain
from trainer.events import EventFormatError, TrainerEvent, parse_event
from trainer.run_layout import EVENTS_NAME, RunLayout

RANK_LINES_KEPT = 20
"""A failed rank's last output lines that explain its failure (the run's status line, ``corral
report``, the ``failed`` notice), runpy's and corral's own frames folded
(``remote.records.culprit.fold_frames``)."""
LINES_READ = RANK_LINES_KEPT * 3
"""Lines read back to fill ``RANK_LINES_KEPT`` once the frames are folded."""


@dataclass(frozen=True, kw_only=True)
class Recorded:
    """One line of a rank's event file: where it came from and its typed event."""

    host: str
    rank: int
    event: TrainerEvent

    @property
    def t(self) -> float:
        """Unix time the line was written."""
        return self.event.t


@dataclass(frozen=True, kw_only=True)
class RunHistory:
    """Everything recorded locally about one run."""

    info: RunInfo
    run_dir: Path
    lines: tuple[Recorded, ...]
    """Every event line of every rank, ordered by time (then rank)."""
    bad_lines: int = 0
    """Lines that were not valid events (a torn last line of a killed rank, for example)."""
    launcher_tails: dict[str, list[tuple[int | None, str]]] = field(default_factory=dict)
    """Per host: the last lines of its launcher log (what a failed host said), each with the
    rank that printed it (None: the launcher)."""


def rank_files(run_dir: Path) -> dict[int, tuple[str, Path]]:
    """Per rank: the host whose copy holds its event file, and that file.

    Hosts that share a machine may share the run directory; each host's copy holds only the
    ranks it owns, and should two copies hold the same rank, the longer one is taken.
    """
    found: dict[int, tuple[str, Path]] = {}
    root = Path(RunLayout(run_dir).path(RunLayout.COLLECTED))
    if not root.is_dir():
        return shared_rank_files(run_dir)
    for host_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        metrics = host_dir / RunLayout.METRICS
        if not metrics.is_dir():
            continue
        for file in metrics.iterdir():
            match = EVENTS_NAME.match(file.name)
            if not match:
                continue
            rank = int(match.group(1))
            held = found.get(rank)
            if held is None or file.stat().st_size > held[1].stat().st_size:
                found[rank] = (host_dir.name, file)
    return found


def shared_rank_files(run_dir: Path) -> dict[int, tuple[str, Path]]:
    """Per rank: its host and event file in a run directory every host wrote into, not a
    follower's copy (pods on one claim, ``corral export k8s``, copied back with ``kubectl
    cp``): the ranks' files are in its own ``metrics/``, each host's ranks in its
    ``hosts/<host>.planned``."""
    layout = RunLayout(run_dir)
    owners: dict[int, str] = {}
    for planned in Path(layout.path(RunLayout.HOSTS)).glob("*.planned"):
        owners.update((int(r), planned.stem) for r in planned.read_text().split() if r.isdigit())
    metrics = Path(layout.path(RunLayout.METRICS))
    files = metrics.iterdir() if metrics.is_dir() else iter(())
    return {int(m.group(1)): (owners.get(int(m.group(1)), "?"), file)
            for file in files if (m := EVENTS_NAME.match(file.name))}


def parse_line(host: str, rank: int, text: str) -> Recorded | None:
    """One event line as a ``Recorded``; None for a blank or broken line or an unknown kind."""
    try:
        event = parse_event(text)
    except EventFormatError:
        return None
    return Recorded(host=host, rank=rank, event=event) if event is not None else None


def read_lines(run_dir: Path) -> tuple[list[Recorded], int]:
    """Every event line of the run's copy in time order, and how many lines were broken."""
    lines: list[Recorded] = []
    bad = 0
    for rank, (host, path) in sorted(rank_files(run_dir).items()):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for text in handle:
                try:
                    event = parse_event(text)
                except EventFormatError:
                    bad += 1
                    continue
                if event is not None:
                    lines.append(Recorded(host=host, rank=rank, event=event))
    lines.sort(key=lambda r: (r.t, r.rank))
    return lines, bad


def launcher_tails(run_dir: Path, hosts: tuple[str, ...],
                   keep: int = 5) -> dict[str, list[tuple[int | None, str]]]:
    """The last ``keep`` non-empty lines of each host's copied launcher log, as shown
    (``host_log_lines``), each with the rank that printed it (None: the launcher's own)."""
    tails: dict[str, list[tuple[int | None, str]]] = {}
    for host in hosts:
        if host_log_path(run_dir, host).is_file():
            tails[host] = [(line.rank, line.text) for line in host_log_lines(run_dir, host)
                           if line.text.strip()][-keep:]
    return tails


def rank_tail(run_dir: Path, host: str, rank: int, keep: int = RANK_LINES_KEPT) -> list[str]:
    """The last ``keep`` lines rank ``rank`` printed, from ``host``'s copied launcher log (which
    tees its ranks' output, each line under its rank's prefix), as shown without colours (a
    bar at its last state): torch's chatter left out, as the follower leaves it out of a
    failure's explanation."""
    said: deque[str] = deque(maxlen=max(keep, LINES_READ))
    for line in host_log_lines(run_dir, host):
        text = plain(line.text).rstrip()
        if line.rank == rank and text.strip() and not is_noise(text):
            said.append(text)
    return fold_frames(list(said))[-keep:]


def load_history(run_dir: Path) -> RunHistory:
    """The run recorded in ``run_dir`` (CorralError when it has no ``run.json``)."""
    info = read_run_info_at(run_dir)
    lines, bad = read_lines(run_dir)
    return RunHistory(info=info, run_dir=run_dir, lines=tuple(lines), bad_lines=bad,
                      launcher_tails=launcher_tails(run_dir, info.hosts))
