"""A recorded run as a console model: the same panels, read from this machine's copy.

The runs screen opens a past run by replaying its recorded events into a fresh ``RunModel``;
the run's final state comes from its ``run.json`` (the outcome ``corral report`` shows).
"""

from __future__ import annotations

from console.model.run import RunModel
from remote.api import FINAL_RUN_STATES, LogLine, Outcome, RankEvent, RunHistory, RunStatus


def model_from_history(history: RunHistory, outcome: Outcome, *, cluster_name: str,
                       policy: str) -> RunModel:
    """The panels' model of a recorded run, as it stood at its last recorded event."""
    info = history.info
    model = RunModel(cluster_name=cluster_name, hosts=list(info.hosts), policy=policy)
    model.reset_run(info.run_id, t=info.started, name=info.name)
    model.started_t = info.started
    last_t = info.started
    for line in history.lines:
        model.apply(RankEvent(host=line.host, event=line.event))
        last_t = max(last_t, line.t)
    for host, tail in history.launcher_tails.items():
        for rank, text in tail:
            model.apply(LogLine(t=last_t, host=host, rank=rank, text=text))
    if outcome.state in FINAL_RUN_STATES:
        model.apply(RunStatus(t=last_t, run_id=info.run_id, state=outcome.state,  # type: ignore[arg-type]
                              detail=outcome.detail or outcome.error or "",
                              failed_host=outcome.failed_host, failed_rank=outcome.failed_rank,
                              wall_s=info.wall_s))
    else:
        model.state = outcome.state
    return model
