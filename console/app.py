"""The corral console: a thin Textual app over a headless ``Session`` and its run model.

The app owns the session (cluster, controller, followed run, model), the panels that render
the model, the run controls (``RunControls``) and the look back at past runs (``PastRuns``);
its keys only route to them, and ``render_effects`` shows what they return
(``console/effects.py``: notifications, modals, screens, work for workers). Everything slow
(check, start, stop, the event stream) runs in workers; the stream's events go straight into
``RunModel`` and the panels redraw from it on a timer (at most 4 Hz), so the UI never waits on
the network and a run with hundreds of ranks cannot flood the message queue.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen

from console import effects as shown
from console.controls import RunControls
from console.formatting import stop_report_text
from console.past_runs import PastRuns
from console.session import Session
from console.terminal import keys_from_terminal
from console.widgets.header import RunHeader
from console.widgets.layout import run_panels, sync_run_panels
from console.widgets.logs import LogsPanel
from console.widgets.modals import (
    CheckReportScreen,
    ConfirmScreen,
    HelpScreen,
    HostChoiceScreen,
    MessageScreen,
    QuitScreen,
)
from console.widgets.script_args import ScriptArgsScreen
from profiles.user_errors import CorralError
from remote.api import RunController
from trainer.settings.run_settings import POLICIES

REFRESH_S = 0.25
"""Panel redraw period: 4 Hz at most, whatever the event rate."""
BUSY_CHANGES_PER_S = 500
"""Model changes a second above which the panels redraw at ``BUSY_REFRESH_S``, not every tick."""
BUSY_REFRESH_S = 0.5
"""Panel redraw period under a flood of events (2 Hz)."""


class ConsoleApp(App[int]):
    """The operator's console for one cluster: panels, keys, and the run it drives."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "corral"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (150, "-wide")]  # noqa: RUF012
    VERTICAL_BREAKPOINTS = [(0, "-short"), (40, "-tall")]  # noqa: RUF012
    # Help and Quit first: a footer narrower than every key still shows them; the keys of
    # a live run's membership and of a failure last (a 200-column footer shows them all).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("s", "start", "Start"),
        Binding("x", "stop", "Stop"),
        Binding("r", "restart", "Restart"),
        Binding("c", "check", "Check"),
        Binding("h", "runs", "Runs"),
        Binding("o", "report", "Report"),
        Binding("p", "cycle_policy", "Policy"),
        Binding("l", "focus_logs", "Logs"),
        Binding("slash", "filter_logs", "Search", key_display="/"),
        Binding("z", "zoom_logs", "Zoom logs"),
        Binding("v", "toggle_noise", "Noise"),
        Binding("e", "leave_host", "Leave"),
        Binding("j", "join_host", "Join"),
        Binding("t", "first_failure", "Traceback"),
        Binding("y", "copy_follow", "Copy tail"),
        Binding("m", "network", "Network"),
    ]

    def __init__(self, session: Session, *, attach_run: str | None = None,
                 refresh_s: float = REFRESH_S, read_only: bool = False) -> None:
        super().__init__()
        self.session = session
        self.controls = RunControls(session, read_only=read_only)
        self.past_runs = PastRuns(session)
        self.attach_run = attach_run
        self.refresh_s = refresh_s
        self._drawn_version = -1
        """Model version the panels show."""
        self._drawn_at = 0.0
        """``time.monotonic()`` of the last redraw."""

    # ---------------------------------------------------------------- layout and refresh
    def compose(self) -> ComposeResult:
        yield from run_panels(self.session.model, self.session.clock, source=self.session)

    def on_mount(self) -> None:
        self.refresh_panels(force=True)
        self.set_interval(self.refresh_s, self.refresh_panels)
        # Everything built so far lives as long as the app: keep it out of the collector's
        # full passes, which otherwise stall key presses for tens of milliseconds.
        gc.freeze()
        if self.attach_run is not None:
            self.render_effects(self.controls.attach(self.attach_run))

    def refresh_panels(self, *, force: bool = False) -> None:
        """Redraw the panels from the model if it changed (the header always: time moves).

        Under a modal the panels wait: redrawing them would re-render the dimmed background.
        """
        if len(self.screen_stack) > 1 and not force:
            return
        now = time.monotonic()
        if not force and self._flooded(now):
            return
        try:
            self.query_one(RunHeader).sync()
        except NoMatches:  # shutting down: the panels are gone
            return
        version = self.session.model.version
        if not force and version == self._drawn_version:
            return
        self._drawn_version = version
        self._drawn_at = now
        sync_run_panels(self)

    def _flooded(self, now: float) -> bool:
        """Whether to skip this tick: the model changes so fast that redraws are the cost.

        Above ``BUSY_CHANGES_PER_S`` model changes a second the panels redraw at most every
        ``BUSY_REFRESH_S`` (2 Hz) instead of every tick: the numbers move too fast to read
        at 4 Hz anyway, and a redraw of hundreds of changed rows is what the console spends
        its time on.
        """
        since = now - self._drawn_at
        if since >= BUSY_REFRESH_S or self._drawn_version < 0:
            return False
        changes = self.session.model.version - self._drawn_version
        return changes / max(since, 1e-3) > BUSY_CHANGES_PER_S

    def show_modal(self, screen: Screen[Any], callback: Callable[[Any], None] | None = None,
                   ) -> None:
        """Push a modal, bringing the panels behind it up to date first (they wait under it)."""
        self.refresh_panels(force=True)
        self.push_screen(screen, callback)

    # ---------------------------------------------------------------- what controls return
    def render_effects(self, effects: shown.Effects) -> None:
        """Show what a control returned, in order."""
        for effect in effects:
            self._render_one(effect)

    def _render_one(self, effect: shown.Effect) -> None:
        if isinstance(effect, shown.Notice):
            # markup=False: messages name cluster.toml sections ("[cluster] name"), not styles.
            extra = {} if effect.timeout is None else {"timeout": effect.timeout}
            self.notify(effect.message, title=effect.title, severity=effect.severity,
                        markup=False, **extra)
        elif isinstance(effect, shown.Work):
            self.run_worker(self._perform(effect), group=effect.group,
                            exclusive=effect.exclusive, exit_on_error=False)
        elif isinstance(effect, shown.Confirm):
            then = effect.then
            self.show_modal(ConfirmScreen(effect.title, effect.question, yes=effect.yes),
                            lambda answer: self.render_effects(then() if answer == "yes"
                                                                else []))
        elif isinstance(effect, shown.ChooseHost):
            then_host, choice = effect.then, HostChoiceScreen(effect.title, effect.question,
                                                              effect.hosts)
            self.show_modal(choice, lambda answer: self.render_effects(
                then_host(host) if (host := choice.chosen(answer)) else []))
        elif isinstance(effect, shown.EditArgs):
            then_args = effect.then
            self.show_modal(ScriptArgsScreen(effect), lambda args: self.render_effects(
                then_args(args) if args is not None else []))
        elif isinstance(effect, shown.AskQuit):
            choose = effect.then
            self.show_modal(QuitScreen(effect.run_id),
                            lambda choice: self.render_effects(choose(choice)))
        else:
            self._render_view(effect)

    def _render_view(self, effect: shown.Effect) -> None:
        """A screen, a modal, a redraw or the exit."""
        if isinstance(effect, shown.ShowCheck):
            self.show_modal(CheckReportScreen(effect.report, title=effect.title))
        elif isinstance(effect, shown.ShowStop):
            self.show_modal(MessageScreen("Run stopped, but not cleanly",
                                          stop_report_text(effect.report)))
        elif isinstance(effect, shown.ShowRuns):
            self._show_runs(effect)
        elif isinstance(effect, shown.ShowReport):
            self._show_report(effect)
        elif isinstance(effect, shown.ShowPastRun):
            from console.widgets.past_run import PastRunScreen

            run_id = effect.model.run_id or ""
            self.push_screen(PastRunScreen(effect.model, self.session.clock, self.session,
                                           report=lambda:
                                           self.render_effects(self.past_runs.show_report(run_id))))
        elif isinstance(effect, shown.Redraw):
            self.refresh_panels()
        elif isinstance(effect, shown.Exit):
            self.exit(0)

    async def _perform(self, work: shown.Work) -> None:
        self.render_effects(await work.work)

    def _show_runs(self, effect: shown.ShowRuns) -> None:
        from console.widgets.runs import RunsScreen

        past = self.past_runs
        self.show_modal(RunsScreen(
            effect.runs, open_run=lambda r: self.render_effects(past.open_past_run(r)),
            report=lambda r: self.render_effects(past.show_report(r))))

    def _show_report(self, effect: shown.ShowReport) -> None:
        from console import report
        from console.widgets.report import ReportScreen

        body = report.one_run(effect.summary, effect.series,
                              width=max(40, self.size.width - 10))
        name = effect.summary.name or effect.run_id
        self.push_screen(ReportScreen(f"report · {name}", body))

    # ---------------------------------------------------------------- actions (keys)
    def action_start(self) -> None:
        self.render_effects(self.controls.start())

    def action_stop(self) -> None:
        self.render_effects(self.controls.stop())

    def action_leave_host(self) -> None:
        self.render_effects(self.controls.leave_host())

    def action_join_host(self) -> None:
        self.render_effects(self.controls.join_host())

    def action_restart(self) -> None:
        self.render_effects(self.controls.restart())

    def action_check(self) -> None:
        self.render_effects(self.controls.check())

    def action_cycle_policy(self) -> None:
        current = self.session.model.next_policy
        following = POLICIES[(POLICIES.index(current) + 1) % len(POLICIES)] \
            if current in POLICIES else POLICIES[0]
        self.set_policy(following)

    def set_policy(self, policy: str) -> None:
        """Use ``policy`` for the next start."""
        if refused := self.controls.refuse_if_read_only("set the next start's policy"):
            self.render_effects(refused)
            return
        model = self.session.model
        model.next_policy = policy
        model.version += 1
        self.refresh_panels()
        self.notify(f"Balancing policy for the next start: {policy}", timeout=3)

    def _logs(self) -> LogsPanel:
        """The logs panel of the screen in front (the live run's, or a past run's)."""
        found = self.screen.query(LogsPanel)
        return found.first() if found else self.query_one(LogsPanel)

    def action_first_failure(self) -> None:
        self._logs().jump_to_failure()

    def action_copy_follow(self) -> None:
        command = self._logs().follow_command()
        if command is None:
            self.notify("No run to follow yet.", severity="warning")
            return
        self.copy_to_clipboard(command)
        self.notify(command, title="copied: follow this host's log with", timeout=8)

    def action_network(self) -> None:
        from console.model.topology import run_topology
        from console.widgets.network import NetworkScreen

        self.show_modal(NetworkScreen(lambda: run_topology(self.session.model,
                                                           self.controls.last_check),
                                      clock=self.session.clock))

    def action_focus_logs(self) -> None:
        self._logs().focus_lines()

    def action_filter_logs(self) -> None:
        self._logs().open_filter()

    def action_toggle_follow(self) -> None:
        self._logs().action_toggle_follow()

    def action_zoom_logs(self) -> None:
        self._logs().toggle_zoom()

    def action_toggle_noise(self) -> None:
        self._logs().toggle_noise()

    def action_help(self) -> None:
        # Built once and kept installed: composing and styling it anew costs a visible pause.
        if not self.is_screen_installed("help"):
            self.install_screen(HelpScreen(), "help")
        self.show_modal(self.get_screen("help"))

    def action_runs(self) -> None:
        self.render_effects(self.past_runs.runs_screen())

    def action_report(self) -> None:
        self.render_effects(self.past_runs.current_report())

    async def action_quit(self) -> None:
        self.render_effects(self.controls.quit())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield SystemCommand("Start run", "Check, push and launch (s)", self.action_start)
        yield SystemCommand("Stop run", "Stop the live run on every host (x)", self.action_stop)
        yield SystemCommand("Restart from checkpoint", "Stop, then resume from the newest "
                            "checkpoint (r)", self.action_restart)
        yield SystemCommand("Leave host", "Take a host out of the live run (e)",
                            self.action_leave_host)
        yield SystemCommand("Join host", "Bring a host into the live run (j)",
                            self.action_join_host)
        yield SystemCommand("Pre-flight check", "Check every host (c)", self.action_check)
        yield SystemCommand("Cycle policy", "Next balancing policy for the next start (p)",
                            self.action_cycle_policy)
        for policy in POLICIES:
            yield SystemCommand(f"Policy: {policy}", f"Use the {policy} balancing policy for "
                                "the next start", lambda p=policy: self.set_policy(p))
        yield SystemCommand("Focus logs", "Move the keyboard to the logs (l)",
                            self.action_focus_logs)
        yield SystemCommand("Search logs", "Filter the logs by a regex; Enter searches every "
                            "line on disk, n/N step (/)", self.action_filter_logs)
        yield SystemCommand("Traceback", "Every line of the run, the culprit's failure in "
                            "view, the collateral ones named (t)", self.action_first_failure)
        yield SystemCommand("Copy tail -F", "Copy the ssh command that follows a host's log "
                            "(y)", self.action_copy_follow)
        yield SystemCommand("Zoom logs", "The logs on the whole screen, and back (z)",
                            self.action_zoom_logs)
        yield SystemCommand("Toggle log noise", "Show or hide torch's INFO lines and known "
                            "warnings in the logs (v)", self.action_toggle_noise)
        yield SystemCommand("Toggle log follow", "Keep the newest log line in view (f)",
                            self.action_toggle_follow)
        yield SystemCommand("Network", "Hosts, every pair's measured Mbit/s and round trip, "
                            "the limiting link, who sits out (m)", self.action_network)
        yield SystemCommand("Past runs", "This cluster's recorded runs; open one read-only (h)",
                            self.action_runs)
        yield SystemCommand("Report", "The current run's report (o)", self.action_report)
        yield SystemCommand("Help", "Keys and panels (?)", self.action_help)
        yield SystemCommand("Quit", "Quit the console (q)", self.action_quit)
        yield from (c for c in super().get_system_commands(screen)
                    if c.title not in ("Quit", "Keys"))


def build_app(
    config_path: Path, *, attach_run: str | None = None, controller: RunController | None = None,
    clock: Callable[[], float] = time.time, read_only: bool = False,
) -> ConsoleApp:
    """The console for ``config_path`` (on the SSH controller unless one is given; without its
    controls when ``read_only``).

    Raises ``CorralError`` for an unusable cluster.toml.
    """
    return ConsoleApp(Session.open(config_path, controller=controller, clock=clock),
                      attach_run=attach_run, read_only=read_only)


def run_console(
    config_path: Path, *, attach_run: str | None = None, controller: RunController | None = None,
    read_only: bool = False, terminal: bool = True,
) -> int:
    """Open the console on ``config_path`` (attached to ``attach_run`` if given); exit code.

    ``terminal``: its keys come from the terminal (``console.terminal.keys_from_terminal``:
    a pipe on standard input is never read as keys; no terminal at all is refused), not from
    a browser tab's pipe (``corral console --served``).
    Config and connection errors print one line (``corral: title: message``) and return the
    error's exit code; nothing raises a traceback at the operator.
    """
    try:
        if terminal:
            keys_from_terminal()
        app = build_app(config_path, attach_run=attach_run, controller=controller,
                        read_only=read_only)
    except CorralError as exc:
        print(f"corral: {exc.title}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    code = app.run()
    if app.controls.exit_note:
        print(app.controls.exit_note)
    return code or 0
