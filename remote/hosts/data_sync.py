"""The data sync: a run's data files into each host's cache, sent once, linked per run.

Each host keeps its data files by content, ``<workdir>/data/<sha256>``, read-only. A sync:

1. asks the host (``PROBE_PY``) which of the run's files its cache holds whole and unchanged
   (and, for the files this machine has not hashed yet, which cached files have their size:
   those are hashed here, ``data_tree.hash_alike``, the rest are sent unhashed), whether it
   sees this machine's files (the marker the master wrote into the launch folder,
   read back there: a ``local`` host or a shared filesystem, found, never guessed from an
   address), its free disk, and whether the paths it must already have are there;
2. refuses, before a byte is sent, what the host cannot take (``plan_problem``);
3. streams the missing files from disk (``CHUNK_BYTES`` at a time: the master's memory does
   not grow with the data; of a large file whose chunks the host's cache holds, from any
   file, only the chunks it lacks: ``remote.hosts.data_chunks``) into ``RECEIVE_PY``, which
   writes each under a temporary name,
   checks its sha256 (or, for a file not hashed here, names it by the sha256 of what arrived,
   which this machine then learns) and only then renames it into the cache: a sync killed
   mid-file leaves a partial file nobody uses, and the next one sends that file again;
4. writes the host's link list (``hosts/<host>.data`` of the run directory): the launch links
   each path of the run's working directory to its cached file, or, on a host that sees this
   machine's files, to the file in place (nothing sent);
5. prunes the host's cache (``PRUNE_PY``) when it sent files: what no running or recent run
   links to and no sync used lately goes.

A cached file is made read-only and stamped with a fixed modification time: a rank that
writes through its link (as root, which read-only does not stop) changes that time, and the
file no longer counts as cached: it is sent again, never used changed. Nor is a file whose
record (size, mtime, ctime, inode) changed since the receiver kept it, unless its hash is still
its name (``remote.hosts.data_scripts``: what is checked, and the sampled re-hash).
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import shlex
import time
from dataclasses import dataclass, field, replace

from remote.config.cluster import HostSection, SshSection
from remote.hosts.data_chunks import CHUNKED_MIN_BYTES, Chunked, chunker, chunks_of, recipe, sidecar
from remote.hosts.data_errors import host_error
from remote.hosts.data_scripts import CHUNKS_PY, PROBE_PY, RECEIVE_PY
from remote.hosts.data_scripts import STAMP_NS as STAMP_NS
from remote.hosts.data_sender import DataSyncError, SendJob, send
from remote.hosts.data_tree import DataFile, DataSet
from remote.hosts.interpreter import last_json, python_word
from remote.hosts.push_tree import mib
from remote.hosts.transport import Transport

FREE_MARGIN_BYTES = 1 << 30
"""Free disk a host keeps after its data arrives (checkpoints and logs need room too)."""
PROBE_HASH_BYTES_PER_S = 50 << 20
"""The slowest hashing a probe's timeout allows for (a loaded host's disk and CPU)."""
SYNC_TIMEOUT_S = 300.0
"""How long a host may take to finish after the last byte was sent (its last hash check)."""
KEEP_RUNS = 3
"""A host's data cache keeps the files of its most recent finished runs (by link list)..."""
KEEP_UNUSED_S = 86_400.0
"""...and every file a probe or a sync used within this many seconds (its ctime, renewed by
each use): a file another sync found cached minutes ago stays, whatever run it is for."""

def _python(host: HostSection, code: str) -> str:
    """``python -S -c CODE``: the standard library alone (no site packages to scan: a sync
    that sends nothing costs one interpreter start per host, the probe's, so it must be
    quick)."""
    return f"{python_word(host)} -S -c {shlex.quote(code)}"


def cache_dir(workdir: str) -> str:
    """A host's data cache (unexpanded ``~`` kept)."""
    return f"{workdir.rstrip('/')}/data"


@dataclass
class DataProgress:
    """One host's sync as it goes: what ``corral run`` and the console show."""

    host: str
    total_bytes: int = 0
    total_files: int = 0
    sent_bytes: int = 0
    sent_files: int = 0
    cached_files: int = 0
    sender_peak_kib: int = 0
    """The peak resident memory of the sender process that fed it (0: this process did)."""
    shared: bool = False
    started: float = field(default_factory=time.monotonic)
    done: bool = False

    def line(self) -> str:
        """``b: 120.0/512.0 MiB, 3/10 files, 48.2 MiB/s, 8 s left``."""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.sent_bytes / elapsed
        left = (self.total_bytes - self.sent_bytes) / rate if rate > 0 else float("inf")
        eta = f"{left:.0f} s left" if left != float("inf") else "starting"
        return (f"data to {self.host}: {mib(self.sent_bytes)}/{mib(self.total_bytes)}, "
                f"{self.sent_files}/{self.total_files} files, {rate / 2**20:.1f} MiB/s, {eta}")

    def summary(self) -> str:
        """The host's one line once done: sent, cached, or in place."""
        if self.shared:
            return f"data on {self.host}: sees this machine's files, linked in place, 0 B sent"
        return (f"data on {self.host}: {_files(self.sent_files)} sent ({mib(self.sent_bytes)}), "
                f"{self.cached_files} already cached")


def _files(count: int) -> str:
    return f"{count} file" + ("" if count == 1 else "s")


@dataclass(frozen=True, kw_only=True)
class HostData:
    """What a host's probe found."""

    have: frozenset[str]
    shared: bool
    free: int
    missing: tuple[str, ...]
    """The paths it must have (``[run] data``, link targets) that it lacks."""
    linked: bool = False
    """It needs nothing sent and wrote the run's link list already."""
    alike: frozenset[tuple[str, int]] = frozenset()
    """Cached files (sha256, size) the size of a file this machine has not hashed yet."""
    chunked: bool = False
    """Its cache keeps chunk lists (``data_chunks``): a large file is sent as its new chunks."""

    def cached(self) -> frozenset[str]:
        """Every sha256 its cache holds of those asked about."""
        return self.have | {sha for sha, _ in self.alike}


async def probe(transport: Transport, data: DataSet, marker: tuple[str, str] | None,
                manifest: str | None = None) -> HostData:
    """Ask the host what it holds (``PROBE_PY``); when it needs nothing sent, it writes the
    run's link list ``manifest`` at once (``HostData.linked``)."""
    ask = {"cache": cache_dir(transport.host.workdir),
           "files": [[sha, f.size] for sha, f in data.unique().items()],
           "sizes": sorted({f.size for f in data.new()}),
           "marker": list(marker) if marker else None,
           # A container sees this machine's files only where it mounts them: for its host,
           # being local proves nothing, the marker read inside the container does.
           "local": transport.host.is_local and transport.host.container is None,
           "paths": list(data.host_paths) + [link.target for link in data.links],
           "manifest": manifest,
           "links": {"cached": [] if data.new() else link_lines(data, False),
                     "shared": link_lines(data, True)}}
    # A cached file whose record changed is hashed whole before it counts (data_scripts):
    # the first probe after the cache existed without records may hash all of it.
    hashing_s = sum(f.size for f in data.unique().values()) / PROBE_HASH_BYTES_PER_S
    done = await transport.run(_python(transport.host, PROBE_PY), timeout=120.0 + hashing_s,
                               input=(json.dumps(ask) + "\n").encode())
    answer = last_json(done.stdout)
    if answer is None:
        raise DataSyncError(f"{transport.host.name}: the data probe failed: " + host_error(
            transport.host.name, done.stderr, cache_dir(transport.host.workdir)))
    return HostData(have=frozenset(answer["have"]), shared=bool(answer["shared"]),
                    free=int(answer["free"]), missing=tuple(answer["missing"]),
                    linked=bool(answer["linked"]),
                    alike=frozenset((str(sha), int(size)) for sha, size in answer["alike"]),
                    chunked=bool(answer.get("chunked")))


def plan_problem(host: str, data: DataSet, found: HostData) -> str | None:
    """Why ``host`` cannot take the run's data as it is (None: it can): a path it must have
    that it lacks, a link out of the folder whose target it lacks, or too little disk."""
    links = {link.target: link.rel for link in data.links}
    for path in found.missing:
        if found.shared and path in links:
            continue
        if path in links:
            return (f"{links[path]} in {data.folder} is a link to {path}, which {host} does not "
                    f"have: name {links[path]!r} in [run] data to send its files, or put "
                    f"{path} on {host}")
        return (f"[run] data names {path}, which {host} does not have: put it there, or name "
                "a path inside the launch folder to send it")
    if found.shared:
        return None
    missing = to_send(data, found)
    need = sum(f.size for f in missing)
    if need + FREE_MARGIN_BYTES <= found.free:
        return None
    largest = sorted(missing, key=lambda f: -f.size)[:5]
    named = "; ".join(f"{f.rel} ({mib(f.size)})" for f in largest)
    return (f"{host} has {mib(found.free)} free for {mib(need)} of data to send (and "
            f"{mib(FREE_MARGIN_BYTES)} to spare): {named}. Put the data on {host} and name "
            "that path in [run] data (an absolute path the hosts have, checked before launch), "
            "or leave some out with a line in .corralignore")


def to_send(data: DataSet, found: HostData) -> list[DataFile]:
    """What a host lacks: the hashed files its cache does not hold, then the new ones."""
    if found.shared:
        return []
    cached = found.cached()
    return [f for sha, f in data.unique().items() if sha not in cached] + list(data.new())


def link_lines(data: DataSet, shared: bool, sent: list[DataFile] | None = None
               ) -> list[list[str]]:
    """``[target, path]`` for each link of the working directory: ``sha:<sha256>`` for a
    cached file, ``new:<i>`` for the ``i``-th file of ``sent`` not hashed yet (the receiver
    names it), an absolute path for a file in place or a link's target."""
    new = {id(f): i for i, f in enumerate(sent or []) if f.sha256 is None}
    files = [[str(f.source.absolute()) if shared
              else f"sha:{f.sha256}" if f.sha256 is not None else f"new:{new[id(f)]}", f.rel]
             for f in data.files]
    return files + [[link.target, link.rel] for link in data.links]


async def sync_host(transport: Transport, data: DataSet, found: HostData, manifest: str,
                    progress: DataProgress, ssh: SshSection | None = None) -> DataProgress:
    """Send the files ``found`` lacks, write the host's link list ``manifest`` (the run's
    ``RunLayout.host_file(host, "data")``: its run directory's parent holds the host's other
    runs) and prune the host's data cache (``PRUNE_PY``). With ``ssh`` (the cluster's
    ``[ssh]``), a host that lacks much is fed from a sender process of its own
    (``remote.hosts.data_sender``)."""
    missing = to_send(data, found)
    large = [f for f in missing if f.size >= CHUNKED_MIN_BYTES] if chunker() else []
    # A host whose cache keeps chunk lists is sent a large file's new chunks (cut here
    # first); a host without (a first sync) is sent it whole, its chunk list cut meanwhile.
    cutting = asyncio.ensure_future(_cut(large)) if large and not found.shared else None
    recipes: dict[int, tuple[Chunked, list[list[object]]]] = {}
    sent = missing
    if cutting is not None and found.chunked:
        recipes, sent = await _by_chunks(transport, missing, await cutting)
    progress.total_files = len(missing)
    progress.total_bytes = sum(f.sent_size for f in sent)
    progress.cached_files = 0 if found.shared else len(data.unique()) - sum(
        f.sha256 is not None for f in missing)
    progress.shared, progress.started = found.shared, time.monotonic()
    if found.linked:  # nothing to send, the links written by the probe
        progress.done = True
        return progress
    head = {"cache": cache_dir(transport.host.workdir),
            "files": [[f.sha256, f.size] if id(f) not in recipes else
                      [recipes[id(f)][0].sha256, f.size, recipes[id(f)][1]] for f in missing],
            "sidecars": {c.sha256: sidecar(c) for c, _ in recipes.values()},
            "manifest": manifest,
            "runs": posixpath.dirname(posixpath.dirname(posixpath.dirname(manifest))),
            "keep": [KEEP_RUNS, KEEP_UNUSED_S],
            "links": link_lines(data, found.shared, missing)}
    job = SendJob(host=transport.host, ssh=ssh, command=_python(transport.host, RECEIVE_PY),
                  head=head, files=tuple(sent), timeout=SYNC_TIMEOUT_S)
    try:
        done = await send(transport, job, progress)
    except BaseException:
        if cutting is not None:
            cutting.cancel()
        raise
    if not done.ok:
        raise DataSyncError(f"data sync to {transport.host.name} failed: " + host_error(
            transport.host.name, done.stderr or done.stdout, cache_dir(transport.host.workdir)))
    _learn(data, missing, done.stdout)
    if cutting is not None and not recipes:
        try:
            cut = await cutting
        except OSError:  # a file unreadable or gone since it was sent: no chunk list kept
            cut = {}
        await _keep_chunk_lists(transport, cut)
    progress.done = True
    return progress


def _learn(data: DataSet, sent: list[DataFile], said: str) -> None:
    """This machine learns the digests the host gave the files it was sent unhashed."""
    answer = last_json(said)
    got = answer.get("got") if answer is not None else None
    if not isinstance(got, list) or len(got) != len(sent):
        raise DataSyncError(f"the data receiver's answer is not understood: {said[-300:]!r}")
    if data.hashes is None:
        return
    for file, sha in zip(sent, got, strict=True):
        if file.sha256 is None:
            data.hashes.learn(file, str(sha))
    data.hashes.save()


async def _cut(files: list[DataFile]) -> dict[int, Chunked]:
    """Each of ``files`` cut into chunks (``data_chunks.chunks_of``, in a thread), by ``id``."""
    return {id(f): await asyncio.to_thread(chunks_of, f.source, f.size, f.mtime_ns)
            for f in files}


async def _ask_chunks(transport: Transport, ask: dict[str, object]) -> dict[str, object]:
    """``CHUNKS_PY`` run on the host with ``ask``: chunk lists kept, chunks found."""
    ask = {"cache": cache_dir(transport.host.workdir), "ids": [], "sidecars": {}, **ask}
    done = await transport.run(_python(transport.host, CHUNKS_PY), timeout=120.0,
                               input=(json.dumps(ask) + "\n").encode())
    answer = last_json(done.stdout)
    if answer is None:
        raise DataSyncError(f"{transport.host.name}: the data chunk query failed: " + host_error(
            transport.host.name, done.stderr, cache_dir(transport.host.workdir)))
    return answer


async def _by_chunks(transport: Transport, missing: list[DataFile], cut: dict[int, Chunked]
                     ) -> tuple[dict[int, tuple[Chunked, list[list[object]]]], list[DataFile]]:
    """Where the host holds the chunks of the large files it lacks: each such file's recipe
    (by ``id`` of its ``DataFile``) and the files as the stream carries them (a recipe's
    file: its new chunks alone)."""
    ids = sorted({ident for chunked in cut.values() for ident, _ in chunked.chunks})
    answer = await _ask_chunks(transport, {"ids": ids})
    said = answer.get("found")
    found = {str(k): (str(v[0]), int(v[1])) for k, v in said.items()} if isinstance(
        said, dict) else {}
    recipes: dict[int, tuple[Chunked, list[list[object]]]] = {}
    sent = []
    for file in missing:
        chunked = cut.get(id(file))
        if chunked is None:
            sent.append(file)
            continue
        pieces, spans = recipe(chunked, found)
        recipes[id(file)] = (chunked, pieces)
        sent.append(replace(file, spans=spans))
    return recipes, sent


async def _keep_chunk_lists(transport: Transport, cut: dict[int, Chunked]) -> None:
    """The host keeps the chunk lists of the large files it was sent whole."""
    if not cut:
        return
    await _ask_chunks(transport, {"sidecars": {c.sha256: sidecar(c) for c in cut.values()}})
