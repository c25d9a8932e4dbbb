"""The console's look back: the runs screen, a past run read-only, and run reports.

``PastRuns`` reads this machine's records of the cluster's runs through a ``Session``, like
``corral report``, and returns what to show (``console/effects.py``); the console app
renders it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from console.effects import Effects, Notice, ShowPastRun, ShowReport, ShowRuns
from profiles.user_errors import CorralError

if TYPE_CHECKING:
    from console.session import Session
    from figures import RunSeries
    from remote.api import RunHistory, RunSummary


class PastRuns:
    """What ``h`` (runs screen) and ``o`` (report of the current run) show."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def runs_screen(self) -> Effects:
        """The cluster's recorded runs, newest first; each opens read-only or as a report."""
        runs = self.session.recorded_runs()
        if not runs:
            return [Notice(message="No run of this cluster is recorded on this machine yet.",
                           severity="warning")]
        return [ShowRuns(runs=runs)]

    def current_report(self) -> Effects:
        """The report of the run the console follows (or shows)."""
        run_id = self.session.model.run_id
        if run_id is None:
            return [Notice(message="No run yet: start one (s) or pick a past one (h).",
                           severity="warning")]
        return self.show_report(run_id)

    def _summary(self, run_id: str
                 ) -> tuple[RunHistory, RunSummary, RunSeries] | CorralError:
        """The run's records and summary, or the error saying why there are none."""
        try:
            return self.session.summary(run_id)
        except CorralError as exc:
            return exc

    def show_report(self, run_id: str) -> Effects:
        """The report of ``run_id`` in a scrollable modal."""
        found = self._summary(run_id)
        if isinstance(found, CorralError):
            return [Notice(message=found.message, title="No report", severity="warning")]
        _, summary, series = found
        return [ShowReport(run_id=run_id, summary=summary, series=series)]

    def open_past_run(self, run_id: str) -> Effects:
        """Show a recorded run in the console's panels, read-only."""
        from console.model.recorded import model_from_history

        found = self._summary(run_id)
        if isinstance(found, CorralError):
            return [Notice(message=found.message, title="Cannot open the run",
                           severity="warning")]
        history, summary, _ = found
        model = self.session.model
        past = model_from_history(history, summary.outcome, cluster_name=model.cluster_name,
                                  policy=summary.policy or model.next_policy)
        return [ShowPastRun(model=past)]
