"""What the remote layer says to its front ends: run and host states, the typed events of a
run's stream, check and stop reports, and the controller protocols.

Plain records with no behaviour beyond a property: every layer of remote/ builds them, and
``remote.api`` re-exports them to the front ends. A front end gets a ``RunController`` for one
cluster.toml, asks it to ``check``, ``start`` or ``attach``, and then consumes the
``RunHandle``'s single async stream of typed ``RunEvent``s until the run ends. Tests of the
console drive it with a fake controller that implements these protocols from scripted events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Protocol

from remote.log_noise import is_noise
from remote.terminal_text import plain
from trainer.balance.estimate import HostVerdict
from trainer.balance.links import PairLink
from trainer.events import TrainerEvent

HostState = Literal[
    "connecting", "checking", "pushing", "starting", "running", "done", "failed", "unreachable",
    "stopped", "joining", "left",
]
"""Lifecycle of one host within a run, in the order a healthy host goes through it; a host
that joins the running run is ``joining`` until its ranks train, one that left it live is
``left`` (its detail: ``left at step N (why)``)."""

RunState = Literal[
    "idle", "checking", "pushing", "launching", "running", "stopping", "completed", "failed",
    "stopped",
]
"""Lifecycle of a run. ``completed``, ``failed`` and ``stopped`` are final (``RunOutcome``)."""


class RunOutcome(Enum):
    """How an ended run ended: the final ``RunState``s (``remote/run/lifecycle.py`` decides)."""

    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


FINAL_RUN_STATES: frozenset[str] = frozenset(outcome.value for outcome in RunOutcome)
"""The ``RunState``s a run ends in, one per ``RunOutcome``."""


@dataclass(frozen=True, kw_only=True)
class RankEvent:
    """A trainer event read from one rank's JSONL file on ``host``."""

    host: str
    event: TrainerEvent
    replayed: bool = False
    """From the run's record, replayed to a seat that opened on the run before its live tail
    (``remote.records.replay``): already said, never a notice again."""


@dataclass(frozen=True, kw_only=True)
class HostStatus:
    """A host changed state (connecting, pushing, ... failed) — ``detail`` says why."""

    t: float
    host: str
    state: HostState
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class LogLine:
    """One line of output from a rank (``rank`` set) or a host's launcher (``rank`` None)."""

    t: float
    host: str
    rank: int | None
    text: str
    """As a terminal shows it (``remote.terminal_text.screen_text``): colours (SGR) kept,
    every other control sequence removed; ``plain`` is the text without colours."""
    bar: bool = False
    """A progress bar's state."""
    replaces: bool = False
    """It replaces the newest bar state of the same host and rank (the bar's earlier state)."""

    @property
    def plain(self) -> str:
        """The text without its colours (a pipe, a file, a notice)."""
        return plain(self.text)

    @property
    def noise(self) -> bool:
        """torch's routine INFO line or a known warning (``remote.log_noise``): kept in the
        log files, hidden by the front ends unless asked for."""
        return is_noise(self.plain)


@dataclass(frozen=True, kw_only=True)
class CheckItem:
    """One pre-flight check on one host (or ``host="*"`` for cluster-wide checks)."""

    host: str
    name: str
    """Short name: ``reachable``, ``python``, ``torch``, ``cuda``, ``disk``, ``leftovers``,
    ``rendezvous-port``, ``interface``..."""
    ok: bool
    detail: str
    """What was found (a version, a count, an interface name)."""
    hint: str = ""
    """For a failure: the exact way to fix it."""


@dataclass(frozen=True, kw_only=True)
class PlannedHost:
    """What one host will run, as planned before a launch."""

    host: str
    ranks: tuple[int, ...]
    """The host's global ranks (numbered in cluster.toml's host order)."""
    device: str
    """``cpu`` or ``cuda``."""
    gpus: int
    """GPUs its ranks use (0 on the CPU)."""
    visible_devices: str | None
    """``CUDA_VISIBLE_DEVICES`` set for its ranks (None: left as it is)."""
    interface: str | None
    """Network interface for Gloo/NCCL (None: they choose)."""
    precision: str
    """The arithmetic its ranks compute in (``auto``: each rank decides for its device)."""
    shares: tuple[int, ...] | None
    """Each rank's samples of the first step (None: measured when the run starts)."""
    command: str
    """The exact command line the host's shell will run (torchrun and the trainer)."""
    env_names: tuple[str, ...] = ()
    """The names of the host's ``env`` table: their values reach the launcher on its standard
    input, never on a command line, and are never shown."""


@dataclass(frozen=True, kw_only=True)
class LaunchPreview:
    """The launch a run would make now, decided from the check's facts; nothing started."""

    run_id: str
    """The run id in the commands (a real start picks a new one)."""
    backend: str
    """The process-group backend every rank gets."""
    world_size: int
    rendezvous: str
    """``master_addr:port`` of torch's rendezvous store."""
    hosts: tuple[PlannedHost, ...]
    """In cluster.toml's order."""
    firewall: tuple[str, ...] = ()
    """Firewall lines for every host that let only the cluster's hosts reach the rendezvous
    port this launch chose and the ports the ranks listen on (``remote.run.preview.
    firewall_lines``; docs/security.md)."""
    script: str | None = None
    """A script run: the script (as cluster.toml names it) and its arguments, shell-quoted,
    which every rank runs with its own batch and precision (None: corral's trainer)."""
    seed_program: str = ""
    """The program each host's command runs as ``"$SEED_CWD"`` before its ranks start (a
    script's working directory: data linked in, a relaunch's newest checkpoint kept;
    ``remote/run/seed_cwd.py``), shown once rather than in every command ("": none)."""


@dataclass(frozen=True, kw_only=True)
class CheckTiming:
    """How long one part of the pre-flight check took: where the time before a launch goes
    (the run's log says each, ``bench/check_phase.py`` prints them)."""

    host: str
    """The host it ran on; ``*`` for a part of the whole cluster."""
    name: str
    """``code bundle`` (the code tree hashed here), ``probe`` (the host's one probe command, as
    the master waited for it), ``torch`` (its torch probe, timed on the host), ``mesh``,
    ``membership port``, ``push`` (the code and what needs it there: a task's import, the data
    rows; ``corral check`` pushes as each probe ends)."""
    seconds: float
    how: str = ""
    """For ``torch``: how the probe knew the GPUs (``version.py``, ``nvml``, ``import``)."""


@dataclass(frozen=True, kw_only=True)
class CheckReport:
    """Every pre-flight check of a cluster."""

    items: tuple[CheckItem, ...]
    plan: LaunchPreview | None = None
    """The launch a run would make, when every check passed (``corral run --dry-run``)."""
    estimate: tuple[HostVerdict, ...] = ()
    """Per host, whether it will pay for its gradient exchange or sit out, in numbers
    (trainer/balance/estimate.py); empty when the check did not get that far."""
    links: tuple[PairLink, ...] = ()
    """Each direction between two hosts as the full-mesh check found and measured it
    (trainer/balance/links.py); empty when it did not run."""
    modes: tuple[tuple[str, str], ...] = ()
    """Per host, ``(host, line)``: what it would do under each exchange mode (exact, local,
    sit out) with the predicted throughput (trainer/lowcomm/modes.py); empty unless the run is
    ``exchange = "local"`` or a host would sit out of the exact exchange."""
    timings: tuple[CheckTiming, ...] = ()
    """How long each part took: in a run, the code bundle, then each host's probe and torch
    probe, each cluster-wide part in the order they ended, then each host's push."""

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(item.ok for item in self.items)

    def failures(self) -> tuple[CheckItem, ...]:
        """The checks that failed, in report order."""
        return tuple(item for item in self.items if not item.ok)


TRAINED_NOTHING = "trained 0 steps"
"""How the detail of a ``completed`` run begins when every rank ended without one optimizer
step (a script that exited before training): not a success, whatever its exit status."""


def trained_nothing(state: str, detail: str) -> bool:
    """Whether a run in ``state`` with ``detail`` completed without training a step."""
    return state == "completed" and detail.startswith(TRAINED_NOTHING)


@dataclass(frozen=True, kw_only=True)
class RunStatus:
    """The run changed state. A final state is the last event of the stream."""

    t: float
    run_id: str
    state: RunState
    detail: str = ""
    """For ``failed``: the first failing host and rank and why; otherwise a short note."""
    failed_host: str | None = None
    failed_rank: int | None = None
    report: CheckReport | None = None
    """For a run that failed its pre-flight check: the whole check report."""
    links: tuple[PairLink, ...] = ()
    """On the status that follows a passed check: every direction between two hosts as the
    full-mesh check measured it (``CheckReport.links``); the console's network view draws
    them."""
    estimate: tuple[HostVerdict, ...] = ()
    """With ``links``: the check's estimate per host (``CheckReport.estimate``)."""
    wall_s: float | None = None
    """On a final status: the run's wall time as its record holds it (``RunInfo.wall_s``,
    what ``corral report`` says); None where the record has none."""


RunEvent = RankEvent | HostStatus | LogLine | RunStatus


@dataclass(frozen=True, kw_only=True)
class StopReport:
    """What ``stop`` found after signalling every host."""

    run_id: str
    remaining: dict[str, int] = field(default_factory=dict)
    """Per host: processes of this run still alive after TERM, grace and KILL (should be 0)."""
    unreachable: tuple[str, ...] = ()
    """Hosts that could not be reached to stop or verify."""
    unverified: tuple[str, ...] = ()
    """Hosts reached whose container engine did not answer: whether the run's containers are
    gone there is unknown (never reported as nothing left)."""
    outcome: RunOutcome | None = None
    """The outcome the run had reached before this stop: then the stop only looked for
    leftovers. None when the stop ended it."""
    ended: dict[str, int] = field(default_factory=dict)
    """With ``outcome``: per host, the run's leftover processes this stop found and ended
    (a host cut off when the run ended); empty when there were none."""

    @property
    def clean(self) -> bool:
        """True when every host was reached and no process of the run is left."""
        return (not self.unreachable and not self.unverified
                and not any(self.remaining.values()))


class RunHandle(Protocol):
    """A live (or finished) run: its event stream and the way to stop it."""

    run_id: str
    name: str
    """The run's name (empty when it has none): what headers show instead of the id."""

    def events(self) -> AsyncIterator[RunEvent]:
        """Every event of the run in order, ending after the final ``RunStatus``.

        For an attached run the stream continues from the last event the master's local copy
        holds, without duplicates or gaps.
        """
        ...

    async def stop(self, *, grace_s: float = 10.0, wait_s: float | None = None) -> StopReport:
        """TERM every host's process group, KILL after ``grace_s`` (``wait_s``: the wait
        ``stop_wait`` gave, when asked first), verify nothing is left."""
        ...

    async def stop_wait(self, grace_s: float) -> tuple[float, str]:
        """How long a stop asked with ``grace_s`` waits before it KILLs (a low-communication
        run's round ends first) and the line that says so ("" if none)."""
        ...


class RunController(Protocol):
    """Runs for one cluster.toml."""

    async def check(self) -> CheckReport:
        """Pre-flight check of every host in parallel; when it passes, the report carries the
        launch plan a run would follow (``CheckReport.plan``; nothing is started)."""
        ...

    async def start(self, *, resume: bool | str = False, policy: str | None = None,
                    name: str | None = None,
                    script_args: Sequence[str] | None = None) -> RunHandle:
        """Begin a run and return its handle at once. ``resume``: relaunch an earlier run (same
        run id and directories) from its newest good checkpoint: the run it names, or with
        ``True`` the newest run of this cluster that has a checkpoint; ``policy`` overrides
        ``[run] policy`` for this start; ``name`` overrides ``[run] name`` (a resumed run keeps
        its name unless a new one is given); ``script_args``: a script run's arguments in
        place of its own (recorded with the run, so a later resume runs them again).

        Check, push and launch then happen in the background and show as ``RunStatus`` and
        ``HostStatus`` events on the handle; a failed check ends the stream with a ``failed``
        ``RunStatus`` carrying the report. Config errors raise ``CorralError`` here."""
        ...

    async def attach(self, run_id: str) -> RunHandle:
        """Reconnect to a live run started earlier."""
        ...

    async def aclose(self) -> None:
        """Close every SSH connection (runs keep going on the hosts)."""
        ...
