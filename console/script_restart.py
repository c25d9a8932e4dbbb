"""The console's ``r`` on a script run: its arguments shown and editable before the relaunch,
with the script's own resume idiom offered when corral recognises it (``--init_from=resume``,
``resume_from_checkpoint``; ``remote/config/resume_idiom.py``), so a script that resumes
through an argument is not started over by rerunning the arguments it started with.

The relaunch is a ``--resume`` of that run (``controller.start(resume=RUN, script_args=...)``):
the attempt before's newest checkpoint is kept whole under ``<run>/kept/<host>/`` first, so
nothing it wrote is silently overwritten, whatever the arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from console.effects import EditArgs, Effects
from profiles.user_errors import CorralError

if TYPE_CHECKING:
    from console.session import Session
    from remote.api import RunInfo


def _run_to_relaunch(session: Session) -> tuple[str, RunInfo | None] | None:
    """The run ``r`` relaunches, the one followed (else the newest recorded one), and its
    record when this machine holds it; None when no run is known."""
    try:
        if session.handle is not None:
            run_id = session.handle.run_id
            return run_id, next(iter(session.runs([run_id])), None)
        recorded = session.recorded_runs()
    except CorralError:  # not recorded here: cluster.toml's script, as the relaunch runs it
        return (session.handle.run_id, None) if session.handle is not None else None
    return (recorded[0].run_id, recorded[0]) if recorded else None


def edit_script_args(session: Session, relaunch: Callable[[str, tuple[str, ...]], Effects]
                     ) -> Effects | None:
    """The dialog that edits a script run's arguments before ``r`` relaunches it (``relaunch``
    gets the run id and the arguments); None when the run to relaunch is no script's (or none
    is known): ``r`` then asks as for a task."""
    from remote.api import resume_offer

    if not session.has_cluster:
        return None
    if (relaunched := _run_to_relaunch(session)) is None:
        return None
    run_id, info = relaunched
    checkpoint = session.model.checkpoint if session.handle is not None else None
    try:
        offer = resume_offer(session.config, info, newest_checkpoint=checkpoint)
    except CorralError:
        return None
    if offer is None:
        return None
    live = session.handle is not None and session.model.live
    what = "Stop run {0} and relaunch" if live else "Relaunch run {0}"
    question = (what.format(run_id) + f" in its working directories ({offer.script}); the "
                "newest checkpoint of the attempt before is kept under kept/<host>/ first. "
                "Its arguments:")
    idiom = offer.idiom
    return [EditArgs(title="Restart a script run", question=question, args=offer.args,
                     offered=idiom.args if idiom is not None else None,
                     idiom=idiom.name if idiom is not None else "",
                     note=idiom.note if idiom is not None else "",
                     then=lambda args: relaunch(run_id, args))]
