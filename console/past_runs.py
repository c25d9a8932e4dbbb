"""The console's look back: the runs screen, a past run read-only, and run reports.

``PastRuns`` belongs to the console app; everything it shows is read from this machine's
records of the cluster's runs through the app's ``Session``, like ``corral report``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from profiles.user_errors import CorralError

if TYPE_CHECKING:
    from console.app import ConsoleApp
    from console.session import Session
    from remote.api import RunHistory, RunSeries, RunSummary


class PastRuns:
    """What ``h`` (runs screen) and ``o`` (report of the current run) show."""

    def __init__(self, app: ConsoleApp, session: Session) -> None:
        self.app = app
        self.session = session

    def runs_screen(self) -> None:
        """The cluster's recorded runs, newest first; each opens read-only or as a report."""
        from console.widgets.runs import RunsScreen

        runs = self.session.recorded_runs()
        if not runs:
            self.app.notify("No run of this cluster is recorded on this machine yet.",
                            severity="warning")
            return
        self.app.show_modal(RunsScreen(runs, open_run=self.open_past_run,
                                       report=self.show_report))

    def current_report(self) -> None:
        """The report of the run the console follows (or shows)."""
        run_id = self.session.model.run_id
        if run_id is None:
            self.app.notify("No run yet: start one (s) or pick a past one (h).",
                            severity="warning")
            return
        self.show_report(run_id)

    def _summary_or_warn(self, run_id: str, title: str
                         ) -> tuple[RunHistory, RunSummary, RunSeries] | None:
        """The run's records and summary, or None after a notification titled ``title``
        saying why not."""
        try:
            return self.session.summary(run_id)
        except CorralError as exc:
            self.app.notify(exc.message, title=title, severity="warning", markup=False)
            return None

    def show_report(self, run_id: str) -> None:
        """The report of ``run_id`` in a scrollable modal."""
        from console import report
        from console.widgets.report import ReportScreen

        found = self._summary_or_warn(run_id, "No report")
        if found is None:
            return
        _, summary, series = found
        body = report.one_run(summary, series, width=max(40, self.app.size.width - 10))
        self.app.push_screen(ReportScreen(f"report · {summary.name or run_id}", body))

    def open_past_run(self, run_id: str) -> None:
        """Show a recorded run in the console's panels, read-only."""
        from console.model.recorded import model_from_history
        from console.widgets.past_run import PastRunScreen

        found = self._summary_or_warn(run_id, "Cannot open the run")
        if found is None:
            return
        history, summary, _ = found
        model = self.session.model
        past = model_from_history(history, summary.outcome, cluster_name=model.cluster_name,
                                  policy=summary.policy or model.next_policy)
        self.app.push_screen(PastRunScreen(past, self.session.clock,
                                           report=lambda: self.show_report(run_id)))
