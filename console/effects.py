"""What a console control asks the screen to do: plain records the Textual app renders.

The run controls (``console/controls.py``) and the look back at past runs
(``console/past_runs.py``) never call into the app: each key's handler returns a list of
these, and ``ConsoleApp.render_effects`` shows them (a notification, a modal, a screen, a worker).
Work that reaches the network is a ``Work``: a coroutine the app runs in a worker, which
returns the effects that follow it. So the controls run without an app too: a headless
test awaits the ``Work`` itself and reads what would be shown.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from console.model.run import RunModel
    from figures import RunSeries
    from remote.api import CheckReport, RunInfo, RunSummary, StopReport


@dataclass(frozen=True, kw_only=True)
class Notice:
    """A notification: a message as written (never markup), with a title and a severity."""

    message: str
    title: str = ""
    severity: Literal["information", "warning", "error"] = "information"
    timeout: float | None = None
    """Seconds it stays; None: the app's default."""


@dataclass(frozen=True, kw_only=True)
class Confirm:
    """A yes/no question; ``then`` runs on yes and returns what follows."""

    title: str
    question: str
    yes: str
    then: Callable[[], Effects]


@dataclass(frozen=True, kw_only=True)
class AskQuit:
    """Quitting while a run is live: detach (the run goes on) or stop it; ``then`` gets the
    choice."""

    run_id: str
    then: Callable[[object], Effects]


@dataclass(frozen=True, kw_only=True)
class ChooseHost:
    """Which host an action is for (``corral leave``'s key): one button per host in
    ``hosts``; ``then`` gets the chosen host's name (None: cancelled)."""

    title: str
    question: str
    hosts: tuple[str, ...]
    then: Callable[[str], Effects]


@dataclass(frozen=True, kw_only=True)
class EditArgs:
    """A script run's arguments to edit before its relaunch (the console's ``r``): ``args``
    as the attempt before ran them, ``offered`` the same with the script's resume idiom
    applied (None: none recognised; ``idiom`` names it, ``note`` says what it does);
    ``then`` gets the arguments to run with (one string each)."""

    title: str
    question: str
    args: tuple[str, ...]
    offered: tuple[str, ...] | None = None
    idiom: str = ""
    note: str = ""
    then: Callable[[tuple[str, ...]], Effects]


@dataclass(frozen=True, kw_only=True)
class ShowCheck:
    """A pre-flight check report in a modal."""

    report: CheckReport
    title: str = "Pre-flight check"


@dataclass(frozen=True, kw_only=True)
class ShowStop:
    """A stop that left something behind, in a modal."""

    report: StopReport


@dataclass(frozen=True, kw_only=True)
class ShowRuns:
    """The runs screen: the recorded runs, newest first."""

    runs: Sequence[RunInfo]


@dataclass(frozen=True, kw_only=True)
class ShowReport:
    """A run's report (rendered at the screen's width)."""

    run_id: str
    summary: RunSummary
    series: RunSeries


@dataclass(frozen=True, kw_only=True)
class ShowPastRun:
    """A recorded run in the console's panels, read-only."""

    model: RunModel
    """The run replayed from its records (``model_from_history``; its ``run_id`` names it)."""


@dataclass(frozen=True, kw_only=True)
class Work:
    """A coroutine to run in a worker (the network is never waited on in the UI); it returns
    what follows it."""

    work: Coroutine[Any, Any, Effects]
    group: str = "control"
    exclusive: bool = False


@dataclass(frozen=True)
class Redraw:
    """Bring the panels up to date with the model now."""


@dataclass(frozen=True)
class Exit:
    """Close the console."""


Effect = (Notice | Confirm | AskQuit | ChooseHost | EditArgs | ShowCheck | ShowStop | ShowRuns
          | ShowReport | ShowPastRun | Work | Redraw | Exit)
Effects = list[Effect]
