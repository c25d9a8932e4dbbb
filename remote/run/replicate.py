"""A script run relaunched in its working directories gets the files rank 0's host wrote.

Under torchrun across machines without a shared disk, a checkpoint that only the master process
writes (nanoGPT's ``out/ckpt.pt``) lies on the first machine alone, and a resume that loads it
on every rank fails on the others with ``FileNotFoundError``. A user of a tool that launches
every host expects ``r`` to resume. So before a script run is launched again in the same
working directories (``corral run --resume``, the console's ``r``, a ``max_restarts``
relaunch), the files under rank 0's host's working directory that another host's working
directory lacks are copied to that host:

1. rank 0's host lists its working directory (size and sha256 of each file, links out of it
   left out: the data sync's links, ``remote.run.fetch.MANIFEST_SCRIPT``);
2. every other host says which of those paths it lacks (``LACKS_PY``): a file of its own (its
   own snapshot, a log) is never replaced; a copy an earlier relaunch made, which rank 0 has
   written again since, is (nanoGPT's ``ckpt.pt`` at a second ``--resume``);
3. what is lacked, at most ``REPLICA_LIMIT_BYTES`` in all (beyond it nothing starts and one error
   names the largest files and the fix), travels through the data sync (content-addressed into
   each host's cache, sent once: ``remote.hosts.data_sync``), fetched here first when rank 0's
   host is not this machine (``remote.run.fetch.copy_listed``, verified);
4. each host copies its files from its cache into its working directory (``COPY_PY``: a copy,
   not a link, as the script may write it again), each under a temporary name renamed into
   place, and records what it copied (``hosts/<host>.replicated``);
5. the log names each file with its size and the hosts it went to.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from pathlib import Path

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig
from remote.events import LogLine, RunEvent
from remote.hosts.data_sync import (
    DataProgress,
    cache_dir,
    plan_problem,
    probe,
    sync_host,
)
from remote.hosts.data_tree import DataFile, DataSet
from remote.hosts.interpreter import last_json, python_word
from remote.hosts.pool import HostPool
from remote.hosts.push_tree import mib
from remote.hosts.transport import Transport
from remote.records.runs import RunInfo, local_run_dir, run_dir_for
from remote.run.fetch import Listing, RemoteFile, copy_listed, manifest, source_host
from remote.run.lifecycle import LaunchFailed
from trainer.run_layout import RunLayout

REPLICA_LIMIT_BYTES = 16 << 30
"""The most a relaunch copies from rank 0's host to the others, all files together (a GPT-2
medium checkpoint with AdamW's state is about 4.2 GB): beyond it, nothing starts."""
NAMED_FILES = 5
"""Files named in the over-the-limit error (the largest first)."""

RECORD_PY = """
import json, os, shutil, sys
ask = json.loads(sys.stdin.readline())
root, where = os.path.expanduser(ask["cwd"]), os.path.expanduser(ask["record"])
try:
    with open(where) as f:
        record = json.load(f)
except (OSError, ValueError):
    record = {}
try:  # the launch's own copies of the launch folder's files (remote.run.seed_cwd), unwritten
    with open(where[:-len(".replicated")] + ".seeded") as f:
        for rel, stamp in json.load(f).items():
            record.setdefault(rel, [""] + stamp)
except (OSError, ValueError):
    pass
"""
"""The start of both host programs: the request, and the host's record of what earlier
relaunches copied into its working directory (``hosts/<host>.replicated``: per path, the sha256
copied and the size and modification time the copy had), and what the launch copied there from
the launch folder (``hosts/<host>.seeded``, ``remote.run.seed_cwd``: replaced by rank 0's file
like an earlier relaunch's copy)."""

LACKS_PY = RECORD_PY + """
def lacks(rel, sha):
    path = os.path.join(root, rel)
    if not os.path.lexists(path):
        return True
    mine = record.get(rel)  # corral's copy, unwritten since, of an older file of rank 0's
    if not mine or mine[0] == sha or os.path.islink(path):
        return False
    info = os.stat(path)
    return [info.st_size, info.st_mtime_ns] == mine[1:]
print(json.dumps({"lacks": [rel for rel, sha in ask["files"] if lacks(rel, sha)]}))
"""
"""Run on a host with ``python -S``: which of rank 0's files its working directory lacks,
or holds only as an earlier relaunch's copy that rank 0 has since written again. A file of the
host's own (a link, even a broken one, or a copy the script wrote since) is never replaced."""

COPY_PY = RECORD_PY + """
os.umask(0o077)
for rel, sha in ask["files"]:
    final = os.path.join(root, rel)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    part = final + ".corral-part"
    shutil.copyfile(os.path.join(os.path.expanduser(ask["cache"]), sha), part)
    os.chmod(part, 0o600)
    os.replace(part, final)
    info = os.stat(final)
    record[rel] = [sha, info.st_size, info.st_mtime_ns]
part = where + ".corral-part"
with open(part, "w") as out:
    json.dump(record, out)
os.replace(part, where)
"""
"""Run on a host with ``python -S``: each cached file copied into the working directory (a
copy, not a link: the script may write it again) under a temporary name renamed into place,
and the record updated."""


@dataclass(frozen=True)
class HostCopy:
    """What one host gets from rank 0's host before the relaunch."""

    host: str
    files: tuple[RemoteFile, ...]


def over_limit(master: str, copies: list[HostCopy],
               limit: int = REPLICA_LIMIT_BYTES) -> str | None:
    """Why the copy cannot go (None: it can): the distinct files' total above ``limit``,
    with the largest named and what the user can do."""
    distinct = {f.name: f for host_copy in copies for f in host_copy.files}
    total = sum(f.size for f in distinct.values())
    if total <= limit:
        return None
    largest = sorted(distinct.values(), key=lambda f: -f.size)[:NAMED_FILES]
    named = "; ".join(f"{f.name} ({mib(f.size)})" for f in largest)
    lacking = ", ".join(c.host for c in copies)
    return (f"{lacking} lack {len(distinct)} file(s) that {master} (rank 0's host) wrote in its "
            f"working directory, {mib(total)} in all, more than the {mib(limit)} a relaunch "
            f"copies: {named}. Have every host's first rank save what the ranks load at resume "
            "(as minGPT's snapshot), put the run's directory on a disk the hosts share, or copy "
            "the files to those hosts' working directories yourself")


def copies_line(master: str, copies: list[HostCopy]) -> str:
    """``resume: copied from h0 (rank 0's host): out/ckpt.pt (10.0 MiB) to h1, h2``."""
    hosts_of: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for host_copy in copies:
        for f in host_copy.files:
            hosts_of.setdefault(f.name, []).append(host_copy.host)
            sizes[f.name] = f.size
    parts = [f"{name} ({mib(sizes[name])}) to {', '.join(hosts)}"
             for name, hosts in sorted(hosts_of.items())]
    return f"resume: copied from {master} (rank 0's host): " + "; ".join(parts)


async def _on_host(transport: Transport, code: str, ask: dict[str, object]) -> str:
    """``code`` run by the host's python with ``ask`` on its input; its output."""
    done = await transport.run(f"{python_word(transport.host)} -S -c {shlex.quote(code)}",
                               check=True, timeout=600.0,
                               input=(json.dumps(ask) + "\n").encode())
    return done.stdout


async def _lacking(transport: Transport, layout: RunLayout, listing: Listing) -> HostCopy:
    """The files of ``listing`` the host's working directory lacks (``LACKS_PY``)."""
    host = transport.host.name
    cwd = layout.script_cwd(host)
    answer = last_json(await _on_host(transport, LACKS_PY, {
        "cwd": cwd, "record": layout.host_file(host, "replicated"),
        "files": [[f.name, f.sha256] for f in listing.files]}))
    if answer is None:
        raise CorralError(f"{host}: no answer on its working directory {cwd}")
    lacked = set(answer["lacks"])
    return HostCopy(host=host,
                 files=tuple(f for f in listing.files if f.name in lacked))


async def _sources(config: ClusterConfig, pool: HostPool, info: RunInfo, master: str,
                   cwd: str, wanted: list[RemoteFile]) -> Path:
    """Where the wanted files lie on this machine: rank 0's working directory itself when its
    host is this machine, else a verified copy under the run's ``fetched/<host>/``."""
    transport = await pool.get(master)
    if transport.host.is_local and transport.host.container is None:
        return Path(os.path.expanduser(cwd))
    target = local_run_dir(config, info.run_id) / RunLayout.FETCHED / master
    await copy_listed(transport, cwd, Listing(files=wanted, single=False), target,
                      record=target / ".manifest-copies.json", progress=lambda _: None)
    return target


async def _deliver(transport: Transport, config: ClusterConfig, run_dir: str, root: Path,
                   host_copy: HostCopy) -> None:
    """Send ``host_copy``'s files into the host's data cache, then copy them into place."""
    host = transport.host
    data = DataSet(folder=root, files=tuple(
        DataFile(rel=f.name, source=root / f.name, size=f.size,
                 mtime_ns=(root / f.name).stat().st_mtime_ns, sha256=f.sha256)
        for f in host_copy.files))
    found = await probe(transport, data, None)
    # A host on this machine would link to rank 0's files in place; it gets its own copy.
    found = replace(found, shared=False)
    if (problem := plan_problem(host.name, data, found)) is not None:
        raise CorralError(problem)
    layout = RunLayout(run_dir)
    await sync_host(transport, data, found, layout.host_file(host.name, "replicas"),
                    DataProgress(host=host.name), config.ssh)
    await _on_host(transport, COPY_PY, {
        "cwd": layout.script_cwd(host.name), "record": layout.host_file(host.name, "replicated"),
        "cache": cache_dir(host.workdir), "files": [[f.rel, f.sha256] for f in data.files]})


async def replicate_master_files(config: ClusterConfig, pool: HostPool, info: RunInfo,
                             hosts: list[str]) -> AsyncGenerator[RunEvent, None]:
    """Copy to each of ``hosts`` what rank 0's host wrote in its working directory and that
    host lacks (see the module's docstring); ``LaunchFailed`` when it cannot."""
    master = source_host(config, info)
    others = [h for h in hosts if h != master]
    if master not in hosts or not others:
        return
    run_dir = run_dir_for(config, info.run_id)
    layout = RunLayout(run_dir)
    cwd = layout.script_cwd(master)
    listing = await manifest(await pool.get(master), cwd, inside=cwd)
    if listing is None or not listing.files:
        return
    answers = await pool.gather(lambda t: _lacking(t, layout, listing), others)
    if failed := [f"{h}: {a}" for h, a in answers.items() if isinstance(a, BaseException)]:
        raise LaunchFailed("resume: cannot read the working directories: " + "; ".join(failed))
    copies = [a for a in answers.values() if isinstance(a, HostCopy) and a.files]
    if not copies:
        return
    if (problem := over_limit(master, copies)) is not None:
        raise LaunchFailed(problem)
    wanted = list({f.name: f for c in copies for f in c.files}.values())
    try:
        root = await _sources(config, pool, info, master, cwd, wanted)
    except CorralError as exc:
        raise LaunchFailed(f"resume: cannot copy from {master}: {exc.message}") from None
    by_host = {c.host: c for c in copies}
    done = await pool.gather(lambda t: _deliver(t, config, run_dir, root,
                                                by_host[t.host.name]), list(by_host))
    errors = [f"{h}: {e}" for h, e in done.items() if isinstance(e, BaseException)]
    if errors:
        raise LaunchFailed("resume: copying rank 0's files failed: " + "; ".join(errors))
    yield LogLine(t=time.time(), host="*", rank=None, text=copies_line(master, copies))
