"""The console's run controls: every call to the remote layer, each in a Textual worker.

``RunControls`` belongs to the console app: it acts on the app's ``Session`` (the controller,
the followed run and its model) and runs check, start, attach, follow, stop, restart and quit
in workers, so the UI never waits on the network. Errors from the remote layer become
notifications or a modal with their fix, never a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from console.widgets.modals import (
    CheckReportScreen,
    ConfirmScreen,
    MessageScreen,
    QuitScreen,
    stop_report_text,
)
from profiles.user_errors import CorralError
from remote.api import CheckReport, RunHandle, StopReport

if TYPE_CHECKING:
    from console.app import ConsoleApp
    from console.session import Session

EVENTS_PER_YIELD = 200
"""Events absorbed before the stream worker lets the UI run (a replayed backlog)."""


class RunControls:
    """What the console's run keys do, and the state behind them (one action at a time)."""

    def __init__(self, app: ConsoleApp, session: Session) -> None:
        self.app = app
        self.session = session
        self.busy = ""
        """What a control worker is doing now ("" when idle); one at a time."""
        self.last_stop: StopReport | None = None
        self.last_check: CheckReport | None = None
        self.exit_note = ""
        """Printed by ``run_console`` after the app closed (how to reattach, the stop report)."""

    # ---------------------------------------------------------------- the keys
    def start(self) -> None:
        if not self._refuse_if_busy() and not self._refuse_if_live("start"):
            self._run("starting", self._start(resume=False))

    def attach(self, run_id: str) -> None:
        self._run("attaching", self._attach(run_id))

    def stop(self) -> None:
        handle = self.session.handle
        if self._refuse_if_busy() or handle is None or not self.session.model.live:
            if not self.busy:
                self.app.notify("No live run to stop.", severity="warning")
            return
        question = f"Stop run {handle.run_id} on every host?"
        self.app.show_modal(ConfirmScreen("Stop run", question, yes="Stop"),
                            lambda answer: self._confirmed(answer, "stopping", self._stop))

    def restart(self) -> None:
        if self._refuse_if_busy():
            return
        handle = self.session.handle
        run = handle.run_id if handle else "the newest run"
        question = (f"Stop {run} and restart it from its newest checkpoint?"
                    if self.session.model.live else f"Restart {run} from its newest checkpoint?")
        self.app.show_modal(ConfirmScreen("Restart from checkpoint", question, yes="Restart"),
                            lambda answer: self._confirmed(answer, "restarting", self._restart))

    def check(self) -> None:
        if not self._refuse_if_busy():
            self._run("checking", self._check())

    def quit(self) -> None:
        handle = self.session.handle
        if self.session.model.live and handle is not None:
            self.app.show_modal(QuitScreen(handle.run_id), self._quit_answer)
        else:
            self._run("", self._leave())

    def _quit_answer(self, choice: object) -> None:
        handle = self.session.handle
        if choice == "leave" and handle is not None:
            self.exit_note = (f"Run {handle.run_id} left running; reattach with "
                              f"`corral attach {handle.run_id}`.")
            self._run("", self._leave())
        elif choice == "stop" and not self._refuse_if_busy():
            self._run("stopping", self._stop(then_quit=True))

    # ---------------------------------------------------------------- workers
    def _run(self, label: str, work: Coroutine[Any, Any, None], *, group: str = "control",
             exclusive: bool = False) -> None:
        """Run ``work`` in a worker, marking the console busy with ``label`` meanwhile."""
        if label:
            self.busy = label
        self.app.run_worker(work, group=group, exclusive=exclusive, exit_on_error=False)

    async def _start(self, *, resume: bool) -> None:
        try:
            handle = await self.session.controller.start(
                resume=resume, policy=self.session.model.next_policy)
        except Exception as exc:  # a CorralError shows its fix; anything else, no traceback
            self.show_error(exc)
            return
        finally:
            self.busy = ""
        self._follow_handle(handle)

    async def _attach(self, run_id: str) -> None:
        try:
            handle = await self.session.controller.attach(run_id)
        except Exception as exc:
            self.show_error(exc)
            return
        finally:
            self.busy = ""
        self._follow_handle(handle)

    def _follow_handle(self, handle: RunHandle) -> None:
        self.session.follow(handle)
        self._run("", self._follow(handle), group="follow", exclusive=True)

    async def _follow(self, handle: RunHandle) -> None:
        model = self.session.model
        applied = 0
        try:
            async for event in handle.events():
                model.apply(event)
                applied += 1
                if applied % EVENTS_PER_YIELD == 0:
                    await asyncio.sleep(0)
        except Exception as exc:
            self.show_error(exc, title="Lost the run's event stream")
            return
        self.app.refresh_panels()
        if model.state == "failed" and model.check_report is not None:
            self.app.show_modal(CheckReportScreen(model.check_report,
                                                  title="Run failed its pre-flight check"))
        elif model.state == "failed":
            self.app.notify(model.state_detail or "the run failed", title="Run failed",
                            severity="error", timeout=15, markup=False)
        elif model.state == "completed":
            self.app.notify(f"Run {handle.run_id} completed.", title="Run completed")

    async def _stop(self, *, then_quit: bool = False) -> None:
        report = await self._stop_live_run()
        if then_quit:
            if report is not None:
                self.exit_note = stop_report_text(report).plain
            self._run("", self._leave())

    async def _stop_live_run(self) -> StopReport | None:
        """Stop the followed run and show what the hosts were left with."""
        handle = self.session.handle
        if handle is None:
            self.busy = ""
            return None
        model = self.session.model
        model.state = "stopping"
        model.version += 1
        try:
            report = await handle.stop()
        except Exception as exc:
            self.show_error(exc, title="Stop failed")
            return None
        finally:
            self.busy = ""
        self.last_stop = report
        if report.clean:
            self.app.notify(stop_report_text(report).plain, timeout=10, markup=False,
                            title="Run stopped" if not report.outcome else "Nothing to stop")
        else:
            self.app.show_modal(MessageScreen("Run stopped, but not cleanly",
                                              stop_report_text(report)))
        return report

    async def _restart(self) -> None:
        if self.session.model.live:
            report = await self._stop_live_run()
            if report is None:
                return
        self._run("starting", self._start(resume=True))

    async def _check(self) -> None:
        try:
            report = await self.session.controller.check()
        except Exception as exc:
            self.show_error(exc, title="Pre-flight check failed to run")
            return
        finally:
            self.busy = ""
        self.last_check = report
        self.app.show_modal(CheckReportScreen(report))

    async def _leave(self) -> None:
        try:
            await self.session.aclose()
        except Exception as exc:  # closing must never keep the operator in
            self.exit_note += f"\n(closing connections: {exc})"
        self.app.exit(0)

    # ---------------------------------------------------------------- helpers
    def show_error(self, exc: BaseException, *, title: str | None = None) -> None:
        """A remote-layer error as a readable notification (its fix hint included)."""
        report = getattr(exc, "report", None)
        if isinstance(report, CheckReport):
            self.app.show_modal(CheckReportScreen(report, title=title or "Pre-flight check"))
            return
        if isinstance(exc, CorralError):
            heading, message = title or exc.title, exc.message
        else:
            heading, message = title or "Unexpected error", f"{type(exc).__name__}: {exc}"
        self.session.model.add_log("corral", f"{heading}: {message}", t=self.session.clock(),
                                   level="error")
        # markup=False: messages name cluster.toml sections ("[cluster] name"), not styles.
        self.app.notify(message, title=heading, severity="error", timeout=20, markup=False)

    def _confirmed(self, answer: object, label: str,
                   work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a confirmed control action (``answer == "yes"``), marking the console busy."""
        if answer == "yes" and not self._refuse_if_busy():
            self._run(label, work())

    def _refuse_if_busy(self) -> bool:
        if self.busy:
            self.app.notify(f"Busy {self.busy}; try again in a moment.", severity="warning")
            return True
        return False

    def _refuse_if_live(self, what: str) -> bool:
        model = self.session.model
        if model.live:
            self.app.notify(f"Run {model.run_id} is live: stop it (x) before you {what}.",
                            severity="warning")
            return True
        return False
