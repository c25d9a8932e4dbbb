"""The console's look back: the runs screen, a past run read-only, and run reports.

``PastRuns`` sits between ``RunControls`` and ``ConsoleApp``; everything it shows is read from
this machine's records of the cluster's runs (``remote.records.history``), like ``corral report``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from console.controls import RunControls
from profiles.user_errors import CorralError

if TYPE_CHECKING:
    from remote.api import ClusterConfig, RunHistory, RunSeries, RunSummary


class PastRuns(RunControls):
    """Actions behind ``h`` (runs screen) and ``o`` (report of the current run)."""

    config: ClusterConfig | None = None
    """The cluster whose runs are listed (set by ``build_app``; None: no records to show)."""

    def action_runs(self) -> None:
        from console.widgets.runs import RunsScreen
        from remote.api import list_runs

        runs = list_runs(self.config) if self.config is not None else []
        if not runs:
            self.notify("No run of this cluster is recorded on this machine yet.",
                        severity="warning")
            return
        self.show_modal(RunsScreen(runs, open_run=self.open_past_run, report=self.show_report))

    def action_report(self) -> None:
        if self.model.run_id is None:
            self.notify("No run yet: start one (s) or pick a past one (h).", severity="warning")
            return
        self.show_report(self.model.run_id)

    def _summary(self, run_id: str) -> tuple[RunHistory, RunSummary, RunSeries]:
        from remote.api import load_history, local_run_dir, summarize

        if self.config is None:
            raise CorralError(f"no records of run {run_id} on this machine")
        history = load_history(local_run_dir(self.config, run_id))
        return history, *summarize(history)

    def _summary_or_warn(self, run_id: str, title: str
                         ) -> tuple[RunHistory, RunSummary, RunSeries] | None:
        """``_summary``, or None after a notification titled ``title`` saying why not."""
        try:
            return self._summary(run_id)
        except CorralError as exc:
            self.notify(exc.message, title=title, severity="warning")
            return None

    def show_report(self, run_id: str) -> None:
        """The report of ``run_id`` in a scrollable modal."""
        from console import report
        from console.widgets.report import ReportScreen

        found = self._summary_or_warn(run_id, "No report")
        if found is None:
            return
        _, summary, series = found
        body = report.one_run(summary, series, width=max(40, self.size.width - 10))
        self.push_screen(ReportScreen(f"report · {summary.name or run_id}", body))

    def open_past_run(self, run_id: str) -> None:
        """Show a recorded run in the console's panels, read-only."""
        from console.model.recorded import model_from_history
        from console.widgets.past_run import PastRunScreen

        found = self._summary_or_warn(run_id, "Cannot open the run")
        if found is None:
            return
        history, summary, _ = found
        model = model_from_history(history, summary.outcome,
                                   cluster_name=self.model.cluster_name,
                                   policy=summary.policy or self.model.next_policy)
        self.push_screen(PastRunScreen(model, self.clock,
                                       report=lambda: self.show_report(run_id)))
