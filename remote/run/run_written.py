"""A file one rank of the run wrote that a rank of another host could not find.

Each host's ranks run in their own copy of the launch folder (``RunLayout.script_cwd``), as
separate machines have their own disks: a checkpoint rank 0 saves into ``ckpt/best.pt`` is on
rank 0's host only, and every other host's ``torch.load("ckpt/best.pt")`` after a barrier
fails with ``FileNotFoundError`` (under torchrun on one machine the ranks share the folder).
Sending the launch folder's copy of that path would be wrong: it is not the file the run wrote
(an older checkpoint, say), and ranks would go on from it in silence. So when a failure names a
relative path that a host's working directory holds, written since the run started, the
failure names the writer (host, ranks, when), says that hosts do not share a folder, and gives
the idioms that work.

``RunWritten`` answers from the files themselves: a working directory on this machine (a
``local`` host) is read when the failure is worded; another host is asked (``stat``, one
command per host) as soon as a rank's output names a missing relative path, well before the
run's outcome is worded (the other hosts are stopped first).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from remote.config.cluster import ClusterConfig
from remote.hosts.missing_file import NOT_FOUND
from remote.hosts.pool import HostPool
from remote.hosts.transport import Transport, shell_path
from trainer.run_layout import RunLayout

IDIOMS = ("hosts do not share a folder (each host's ranks run in their own copy of the launch "
          "folder, as on separate machines), so the other hosts cannot find it: have rank 0 "
          "broadcast what every rank loads (torch.distributed.broadcast_object_list; or load "
          "weights on rank 0 before wrapping the model in DDP, which broadcasts them), or "
          "save it on each host's first rank (LOCAL_RANK == 0) so that each host holds its own "
          "copy")
"""What works instead, said with every such failure."""
ASK_TIMEOUT_S = 15.0
MTIME = re.compile(r"^(\d+)(?:\.\d+)?$")


def missing_path(text: str) -> PurePosixPath | None:
    """The relative path (inside the folder) a ``FileNotFoundError`` in ``text`` names."""
    match = NOT_FOUND.search(text)
    if match is None or os.path.isabs(match.group(1)):
        return None
    rel = PurePosixPath(os.path.normpath(match.group(1)))
    return None if rel.parts[:1] == ("..",) else rel


class RunWritten:
    """The files of one run's working directories, as a failure's explanation needs them."""

    def __init__(self, config: ClusterConfig, run_dir: str, since: float,
                 ranks_of: Callable[[str], list[int]]) -> None:
        layout = RunLayout(run_dir)
        self.since, self.ranks_of = since, ranks_of
        """``since``: the run's start (epoch seconds); ``ranks_of(host)``: its ranks."""
        self.local = {h.name: Path(os.path.expanduser(layout.script_cwd(h.name)))
                      for h in config.hosts if h.is_local}
        self.remote = {h.name: layout.script_cwd(h.name)
                       for h in config.hosts if not h.is_local}
        self.found: dict[tuple[str, PurePosixPath], float] = {}
        """(host, path) -> modification time, from the remote hosts asked."""
        self._asked: dict[PurePosixPath, asyncio.Task[None]] = {}

    def heard(self, pool: HostPool, text: str) -> None:
        """A rank printed ``text``: when it names a missing relative path, ask the remote
        hosts (in the background, once per path) whether they hold it."""
        rel = missing_path(text)
        if rel is None or rel in self._asked or not self.remote:
            return
        self._asked[rel] = asyncio.ensure_future(self._ask(pool, rel))

    async def _ask(self, pool: HostPool, rel: PurePosixPath) -> None:
        async def stat(transport: Transport) -> None:
            where = f"{self.remote[transport.host.name].rstrip('/')}/{rel}"
            done = await transport.run(f"stat -c %Y {shell_path(where)} 2>/dev/null || true",
                                       timeout=ASK_TIMEOUT_S)
            if (match := MTIME.match(done.stdout.strip())):
                self.found[(transport.host.name, rel)] = float(match.group(1))

        await pool.gather(stat, list(self.remote))  # an unreachable host: not known

    def close(self) -> None:
        """Cancel the questions still under way."""
        for task in self._asked.values():
            task.cancel()

    def written(self, host: str, rel: PurePosixPath) -> float | None:
        """When ``host``'s working directory's ``rel`` was written (None: not there, or not
        known)."""
        if host in self.local:
            try:
                return (self.local[host] / rel).stat().st_mtime
            except OSError:
                return None
        return self.found.get((host, rel))

    def explain(self, text: str) -> str | None:
        """For a failure's ``text`` naming a ``FileNotFoundError`` on a relative path that a
        host's working directory holds, written since the run started: one sentence naming
        its writer and what works; else None."""
        rel = missing_path(text)
        if rel is None:
            return None
        for host in sorted({*self.local, *self.remote}):
            written = self.written(host, rel)
            if written is None or written < self.since:  # the launch folder's copy
                continue
            ranks = self.ranks_of(host)
            who = (f"rank {ranks[0]}" if len(ranks) == 1 else
                   f"one of ranks {', '.join(map(str, ranks))}" if ranks else "its ranks")
            when = time.strftime("%H:%M:%S", time.localtime(written))
            return f"{rel} was written by this run on {host} ({who}, at {when}); {IDIOMS}"
        return None
