"""``corral fetch RUN [PATH...]`` of a script's run: what the script wrote, brought back.

A plain script writes its outputs (a snapshot, a ``out/`` folder, logs) by relative path into
its working directory on each host: the host's copy of the pushed folder inside the run
directory (``RunLayout.script_cwd``). The fetch copies rank 0's (or, with ``--all-hosts``, every
host's) working directory, or the ``PATH``s named in it, into
``<local run dir>/fetched/<host>/``, each file verified and renamed into place as
``remote.run.fetch`` does, from ``local`` and SSH hosts alike. A ``PATH`` is relative to that
working directory and never leaves it: an absolute path or a ``..`` is refused here, and the
host follows links only inside it (a link out of it is left out, and counted).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath

from profiles.user_errors import CorralError, UsageError
from remote.config.cluster import ClusterConfig
from remote.hosts.pool import HostPool
from remote.records.history import rank_files
from remote.records.runs import RunInfo, local_run_dir, run_dir_for
from remote.run.fetch import Fetched, copy_listed, manifest, source_host
from trainer.run_layout import RunLayout

WHOLE = "."
"""The working directory itself (no ``PATH`` named)."""


def output_path(path: str) -> str:
    """``PATH`` as a clean relative POSIX path inside the working directory (a ``UsageError``
    naming it when it is absolute, empty or reaches out with ``..``)."""
    pure = PurePosixPath(path)
    if not path.strip() or pure.is_absolute() or path.startswith("~") or ".." in pure.parts:
        raise UsageError(f"PATH {path!r}: name a file or folder the script wrote, relative to "
                         "its working directory (no absolute path, no ..)", title="bad PATH")
    return pure.as_posix()


def output_hosts(config: ClusterConfig, info: RunInfo, *, all_hosts: bool) -> list[str]:
    """Rank 0's host, or every host that ran ranks of the run (else every host it names)."""
    if not all_hosts:
        return [source_host(config, info)]
    ran = list(dict.fromkeys(host for host, _ in rank_files(
        local_run_dir(config, info.run_id)).values()))
    known = {h.name for h in config.hosts}
    return [h for h in ran or list(info.hosts) if h in known]


async def fetch_outputs(config: ClusterConfig, pool: HostPool, info: RunInfo,
                        paths: Sequence[str], *, all_hosts: bool = False,
                        progress: Callable[[str], None] = lambda _: None) -> list[Fetched]:
    """Copy the script's working directory (or ``paths`` in it) from rank 0's host, or every
    host, into ``fetched/<host>/``, verified (see the module's docstring)."""
    wanted = [output_path(p) for p in paths] or [WHOLE]
    layout = RunLayout(run_dir_for(config, info.run_id))
    fetched: list[Fetched] = []
    for host in output_hosts(config, info, all_hosts=all_hosts):
        cwd = layout.script_cwd(host)
        transport = await pool.get(host)
        for path in wanted:
            remote = cwd if path == WHOLE else f"{cwd}/{path}"
            listing = await manifest(transport, remote, inside=cwd)
            if listing is None or not listing.files:
                raise CorralError(
                    f"nothing at {remote} on {host}: " + (
                        "the run left no working directory there (its script never started "
                        "there, or the run's directory was removed)" if path == WHOLE else
                        f"the script wrote no {path} in its working directory {cwd}"),
                    title="nothing to fetch")
            base = local_run_dir(config, info.run_id) / RunLayout.FETCHED / host
            target = base if path == WHOLE else base / path
            key = hashlib.sha256(path.encode()).hexdigest()[:16]
            fetched.append(await copy_listed(transport, remote, listing.as_target(), target,
                                             record=base / f".manifest-{key}.json",
                                             progress=progress))
    return fetched
