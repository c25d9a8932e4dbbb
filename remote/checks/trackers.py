"""This machine's check for ``[tracking]`` and ``[notify]``: the package of each tracker a
run logs to, and apprise for notices; and, as information only, textual-serve when it is
missing (``corral console --serve`` needs it; nothing in cluster.toml does).

The trackers and the notices run here (from the events this machine follows), never on the
hosts, so the check is one cluster-wide item per tracker (and one for apprise), like the local
run_root's.
"""

from __future__ import annotations

import importlib.util

from profiles.user_errors import UsageError
from remote.checks.notify_urls import masked_list, resolved, url_problems
from remote.config.cluster import ClusterConfig
from remote.events import CheckItem
from remote.records.tracker_packages import MISSING, installed


def tracker_items(config: ClusterConfig) -> list[CheckItem]:
    """One item per tracker ``[tracking]`` names: its package is importable here; and with
    ``[notify] urls``, one for apprise."""
    wanted = {"mlflow": config.tracking.mlflow, "aim": config.tracking.aim}
    trackers = [CheckItem(host="*", name=f"tracking-{name}", ok=installed(name),
                          detail=f"this machine: {where}" if installed(name) else
                          f"this machine: no {name} package",
                          hint="" if installed(name) else MISSING[name])
                for name, where in wanted.items() if where]
    return [*trackers, *notify_items(config), *serve_items(), *chunk_items()]


def chunk_items() -> list[CheckItem]:
    """Without pyfastcdc or blake3 (the ``data`` extra): an item naming what is missing, never
    a failure (the data sync then sends a changed file whole, not its changed chunks)."""
    lacking = [name for name in ("pyfastcdc", "blake3") if importlib.util.find_spec(name) is None]
    if not lacking:
        return []
    return [CheckItem(host="*", name="data-chunks", ok=True,
                      detail=f"this machine: no {' or '.join(lacking)}, so a changed data file "
                             "is sent whole, not its changed chunks: pip install 'corral[data]'")]


def serve_items() -> list[CheckItem]:
    """Without textual-serve (the ``serve`` extra): an item that says so, never a failure (a
    run does not need it; the browser view, ``corral console --serve``, does)."""
    if importlib.util.find_spec("textual_serve") is not None:
        return []
    return [CheckItem(host="*", name="serve", ok=True,
                      detail="this machine: no textual-serve, so no browser view (corral "
                             "console --serve): pip install 'corral[serve]'")]


def notify_items(config: ClusterConfig) -> list[CheckItem]:
    """With ``[notify] urls``: apprise is importable here (the ``notify`` extra), every
    ``${NAME}`` is set, and apprise itself reads every URL (what ``corral run`` refuses)."""
    if not config.notify.urls:
        return []
    if importlib.util.find_spec("apprise") is None:
        return [CheckItem(host="*", name="notify", ok=False,
                          detail="this machine: no apprise package",
                          hint="[notify] urls need apprise: pip install 'corral[notify]' (or "
                               "leave [notify] urls out)")]
    import apprise

    try:
        problems = url_problems(apprise, config.notify.urls, resolved(config.notify.urls))
    except UsageError as exc:
        problems = [exc.message]
    if problems:
        return [CheckItem(host="*", name="notify", ok=False, detail="; ".join(problems),
                          hint="fix [notify] urls (corral run refuses them as they are)")]
    return [CheckItem(host="*", name="notify", ok=True,
                      detail=f"this machine: apprise reads {masked_list(config.notify.urls)}")]
