"""The run's check's measurements, kept with its record: every seat's network view draws them.

The check that starts a run measures every link between its hosts (``PairLink``) and
estimates each host's part (``HostVerdict``); only the seat that launched the run saw them
go by. ``keep_mesh`` writes them next to ``run.json`` (``RunLayout.CHECKED_MESH``) and
``kept_mesh`` reads them back for a seat opened later (``corral attach``, a ``--serve`` tab).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from pathlib import Path

from remote.records.private import write_private
from trainer.balance.estimate import HostVerdict
from trainer.balance.links import PairLink
from trainer.run_layout import RunLayout


def keep_mesh(local_dir: Path, links: tuple[PairLink, ...],
              estimate: tuple[HostVerdict, ...]) -> None:
    """Write the check's links and estimate with the run's record (a failure to is no
    failure of the run: a later seat's network view then says none were measured)."""
    body = {"links": [asdict(link) for link in links],
            "estimate": [asdict(verdict) for verdict in estimate]}
    with contextlib.suppress(OSError):
        write_private(Path(RunLayout(local_dir).path(RunLayout.CHECKED_MESH)), json.dumps(body))


def kept_mesh(local_dir: Path) -> tuple[tuple[PairLink, ...], tuple[HostVerdict, ...]]:
    """The links and estimate ``keep_mesh`` wrote (none when it did not, or they cannot be
    read: a file from another version, a torn write)."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError, AttributeError):
        body = json.loads(Path(RunLayout(local_dir).path(RunLayout.CHECKED_MESH)).read_text())
        return (tuple(PairLink(**item) for item in body["links"]),
                tuple(HostVerdict(**item) for item in body["estimate"]))
    return (), ()
