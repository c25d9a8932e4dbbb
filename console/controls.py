"""The console's run controls: every call to the remote layer, each in a Textual worker.

``RunControls`` is the base of the console app: it holds the controller, the run model and the
followed run's handle, and runs check, start, attach, follow, stop, restart and quit in workers,
so the UI never waits on the network. Errors from the remote layer become notifications or a
modal with their fix, never a traceback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from textual import work
from textual.app import App
from textual.screen import Screen

from console.model.run import RunModel
from console.widgets.modals import CheckReportScreen, MessageScreen, stop_report_text
from profiles.user_errors import CorralError
from remote.api import CheckReport, RunController, RunHandle, StopReport

REFRESH_S = 0.25
"""Panel redraw period: 4 Hz at most, whatever the event rate."""
EVENTS_PER_YIELD = 200
"""Events absorbed before the stream worker lets the UI run (a replayed backlog)."""


class RunControls(App[int]):
    """State and workers behind the console's keys (the layout lives in ``ConsoleApp``)."""

    def __init__(
        self, *, controller: RunController, model: RunModel, attach_run: str | None = None,
        clock: Callable[[], float] = time.time, refresh_s: float = REFRESH_S,
    ) -> None:
        super().__init__()
        self.controller = controller
        self.model = model
        self.attach_run = attach_run
        self.clock = clock
        self.refresh_s = refresh_s
        self.handle: RunHandle | None = None
        self.busy = ""
        """What a control worker is doing now ("" when idle); one at a time."""
        self.last_stop: StopReport | None = None
        self.last_check: CheckReport | None = None
        self.exit_note = ""
        """Printed by ``run_console`` after the app closed (how to reattach, the stop report)."""
        self._drawn_version = -1
        """Model version the panels show."""
        self._drawn_at = 0.0
        """``time.monotonic()`` of the last redraw."""

    def refresh_panels(self, *, force: bool = False) -> None:
        """Redraw the panels from the model (the app with panels defines it)."""

    # ---------------------------------------------------------------- workers
    @work(group="control", exit_on_error=False)
    async def _worker_start(self, *, resume: bool) -> None:
        try:
            handle = await self.controller.start(resume=resume, policy=self.model.next_policy)
        except Exception as exc:  # a CorralError shows its fix; anything else, no traceback
            self.show_error(exc)
            return
        finally:
            self.busy = ""
        self._follow_handle(handle)

    @work(group="control", exit_on_error=False)
    async def _worker_attach(self, run_id: str) -> None:
        try:
            handle = await self.controller.attach(run_id)
        except Exception as exc:
            self.show_error(exc)
            return
        finally:
            self.busy = ""
        self._follow_handle(handle)

    def _follow_handle(self, handle: RunHandle) -> None:
        self.handle = handle
        self.model.reset_run(handle.run_id, t=self.clock(), name=getattr(handle, "name", ""))
        self._worker_follow(handle)

    @work(group="follow", exclusive=True, exit_on_error=False)
    async def _worker_follow(self, handle: RunHandle) -> None:
        applied = 0
        try:
            async for event in handle.events():
                self.model.apply(event)
                applied += 1
                if applied % EVENTS_PER_YIELD == 0:
                    await asyncio.sleep(0)
        except Exception as exc:
            self.show_error(exc, title="Lost the run's event stream")
            return
        self.refresh_panels()
        if self.model.state == "failed" and self.model.check_report is not None:
            self.show_modal(CheckReportScreen(self.model.check_report,
                                               title="Run failed its pre-flight check"))
        elif self.model.state == "failed":
            self.notify(self.model.state_detail or "the run failed", title="Run failed",
                        severity="error", timeout=15)
        elif self.model.state == "completed":
            self.notify(f"Run {handle.run_id} completed.", title="Run completed")

    @work(group="control", exit_on_error=False)
    async def _worker_stop(self, *, then_quit: bool = False) -> None:
        report = await self._stop_live_run()
        if then_quit:
            if report is not None:
                self.exit_note = stop_report_text(report).plain
            self._worker_leave()

    async def _stop_live_run(self) -> StopReport | None:
        """Stop the followed run and show what the hosts were left with."""
        handle = self.handle
        if handle is None:
            self.busy = ""
            return None
        self.model.state = "stopping"
        self.model.version += 1
        try:
            report = await handle.stop()
        except Exception as exc:
            self.show_error(exc, title="Stop failed")
            return None
        finally:
            self.busy = ""
        self.last_stop = report
        if report.clean:
            self.notify(stop_report_text(report).plain, title="Run stopped", timeout=10)
        else:
            self.show_modal(MessageScreen("Run stopped, but not cleanly",
                                           stop_report_text(report)))
        return report

    @work(group="control", exit_on_error=False)
    async def _worker_restart(self) -> None:
        if self.model.live:
            report = await self._stop_live_run()
            if report is None:
                return
        self.busy = "starting"
        self._worker_start(resume=True)

    @work(group="control", exit_on_error=False)
    async def _worker_check(self) -> None:
        try:
            report = await self.controller.check()
        except Exception as exc:
            self.show_error(exc, title="Pre-flight check failed to run")
            return
        finally:
            self.busy = ""
        self.last_check = report
        self.show_modal(CheckReportScreen(report))

    @work(group="control", exit_on_error=False)
    async def _worker_leave(self) -> None:
        try:
            await self.controller.aclose()
        except Exception as exc:  # closing must never keep the operator in
            self.exit_note += f"\n(closing connections: {exc})"
        self.exit(0)

    # ---------------------------------------------------------------- helpers
    def show_error(self, exc: BaseException, *, title: str | None = None) -> None:
        """A remote-layer error as a readable notification (its fix hint included)."""
        report = getattr(exc, "report", None)
        if isinstance(report, CheckReport):
            self.show_modal(CheckReportScreen(report, title=title or "Pre-flight check"))
            return
        if isinstance(exc, CorralError):
            heading, message = title or exc.title, exc.message
        else:
            heading, message = title or "Unexpected error", f"{type(exc).__name__}: {exc}"
        self.model.add_log("corral", f"{heading}: {message}", t=self.clock(), level="error")
        self.notify(message, title=heading, severity="error", timeout=20)

    def show_modal(self, screen: Screen[Any], callback: Callable[[Any], None] | None = None,
                   ) -> None:
        """Push a modal, bringing the panels behind it up to date first (they wait under it)."""
        self.refresh_panels(force=True)
        self.push_screen(screen, callback)

    def _begin(self, label: str, worker: Callable[[], object], answer: object) -> None:
        """Run a confirmed control action (``answer == "yes"``), marking the console busy."""
        if answer == "yes" and not self._refuse_if_busy():
            self.busy = label
            worker()

    def _refuse_if_busy(self) -> bool:
        if self.busy:
            self.notify(f"Busy {self.busy}; try again in a moment.", severity="warning")
            return True
        return False

    def _refuse_if_live(self, what: str) -> bool:
        if self.model.live:
            self.notify(f"Run {self.model.run_id} is live: stop it (x) before you {what}.",
                        severity="warning")
            return True
        return False
