"""A file one rank of the run wrote that a rank of another host could not find.

Each host's ranks run in their own copy of the launch folder (``RunLayout.script_cwd``), as
separate machines have their own disks: a checkpoint rank 0 saves into ``ckpt/best.pt`` is on
rank 0's host only, and every other host's ``torch.load("ckpt/best.pt")`` after a barrier
fails with ``FileNotFoundError`` (under torchrun on one machine the ranks share the folder).
Sending the launch folder's copy of that path would be wrong: it is not the file the run wrote
(an older checkpoint, say), and ranks would go on from it in silence. So when a failure names a
relative path that a host's working directory holds, written since the attempt started, the
failure names the writer (host, ranks, when), says that hosts do not share a folder, and gives
the idioms that work. Working directories on this machine (``local`` hosts) are read here; a
remote host's cannot be read from a failure's words and is not judged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TypeAlias

from remote.config.cluster import ClusterConfig
from remote.hosts.missing_file import NOT_FOUND
from trainer.run_layout import RunLayout

IDIOMS = ("hosts do not share a folder (each host's ranks run in their own copy of the launch "
          "folder, as on separate machines), so the other hosts cannot find it: have rank 0 "
          "broadcast what every rank loads (torch.distributed.broadcast_object_list; or load "
          "weights on rank 0 before wrapping the model in DDP, which broadcasts them), or "
          "save it on each "
          "host's first rank (LOCAL_RANK == 0) so that each host holds its own copy")
"""What works instead, said with every such failure."""

RunWritten: TypeAlias = tuple[dict[str, Path], float, Callable[[str], list[int]]]
"""``explain_written``'s first arguments: (working directories, since, ranks of a host)."""


def local_cwds(config: ClusterConfig, run_dir: str) -> dict[str, Path]:
    """The working directories of the run's hosts that are on this machine, by host."""
    layout = RunLayout(run_dir)
    return {host.name: Path(os.path.expanduser(layout.script_cwd(host.name)))
            for host in config.hosts if host.is_local}


def explain_written(cwds: dict[str, Path], since: float, ranks_of: Callable[[str], list[int]],
                    text: str) -> str | None:
    """For a failure's ``text`` naming a ``FileNotFoundError`` on a relative path that one
    host's working directory in ``cwds`` holds, modified at or after ``since`` (epoch
    seconds: this attempt's start): one sentence naming its writer and what works; else None.
    ``ranks_of(host)``: the ranks of a host."""
    match = NOT_FOUND.search(text)
    if match is None or os.path.isabs(match.group(1)):
        return None
    rel = PurePosixPath(os.path.normpath(match.group(1)))
    if rel.parts[:1] == ("..",):
        return None
    for host, cwd in sorted(cwds.items()):
        try:
            written = (cwd / rel).stat().st_mtime
        except OSError:
            continue
        if written < since:  # the launch folder's copy, not this run's
            continue
        ranks = ranks_of(host)
        who = (f"rank {ranks[0]}" if len(ranks) == 1 else
               f"one of ranks {', '.join(map(str, ranks))}" if ranks else "its ranks")
        when = time.strftime("%H:%M:%S", time.localtime(written))
        return (f"{match.group(1)} was written by this run on {host} ({who}, at {when}); "
                f"{IDIOMS}")
    return None
