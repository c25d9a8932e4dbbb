"""What data a run sends, file by file, each named by its content (sha256).

The launch folder's data (``remote.hosts.push_tree``'s ``PushTree.data``) and the paths
``[run] data`` names (``remote.config.data_paths``) become one ``DataSet``: for every file,
where the run's working directory has it (``rel``), where it is on this machine, its size and
its sha256. A host's cache holds files by sha256 (``remote.hosts.data_sync``), so a file
already there is not sent again, and a changed one is sent alone.

Hashing gigabytes on every launch would cost more than sending nothing: ``HashCache`` keeps
each file's sha256 under its path, size and modification time, so an unchanged file is
hashed once. A file this machine has not hashed yet (new, or changed) is not hashed before it
is sent: a separate pass over the data first would cost a read of every byte before the first
one leaves (1.2 s per GiB on an idle core of the 2-core VM, docs/benchmarks/data.md). The host that
receives it hashes its bytes as they arrive (it must, to check them), names it by that digest
and reports it, and this machine learns it into its cache (``remote.hosts.data_sync``). Only a
new file as large as one a host already caches is hashed here first (``hash_alike``): it may
be that file, touched, and then nothing is sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from profiles.user_errors import UsageError
from remote.hosts.push_tree import mib, walk_tree

CHUNK_BYTES = 1 << 20
"""What is read from a data file at once (hashing and sending): the master's memory per host."""
HASH_THREADS = min(4, os.cpu_count() or 1)
"""Files hashed at once here (``hash_alike``; hashlib and file reads release the GIL: the
cores share the hashing, each thread holding one chunk)."""
HASH_CACHE = Path("~/.corral/data-hashes.json")
"""This machine's hash cache: ``{path: [size, mtime_ns, sha256]}``."""


@dataclass(frozen=True, kw_only=True)
class DataFile:
    """One file a run's working directory gets from the data sync."""

    rel: str
    """Its path in the run's working directory (POSIX, relative)."""
    source: Path
    """The file on this machine (a named link's target's file, read through the link)."""
    size: int
    mtime_ns: int
    """Its modification time when listed: a file that changes before its last byte is sent
    is refused, never sent torn."""
    sha256: str | None
    """None: this machine has not hashed it yet; the host that receives it names it by the
    digest of the bytes it got, and this machine learns it (``HashCache.learn``)."""
    spans: tuple[tuple[int, int], ...] | None = None
    """``(offset, length)`` of the bytes the stream carries (``data_chunks.recipe``: the
    host has the rest); None: the whole file."""

    @property
    def sent_size(self) -> int:
        """Bytes of it the stream carries."""
        return self.size if self.spans is None else sum(length for _, length in self.spans)

    def sent_spans(self) -> tuple[tuple[int, int], ...]:
        """``spans``, or the whole file as one."""
        return ((0, self.size),) if self.spans is None else self.spans


@dataclass(frozen=True, kw_only=True)
class OutsideLink:
    """A link in the launch folder to a path outside it, not named in ``[run] data``:
    recreated as is where its target is (a host sharing this machine's files), named before
    launch elsewhere; never followed."""

    rel: str
    """The link's path in the folder."""
    target: str
    """Its target, absolute, as this machine resolves it."""


@dataclass(frozen=True, kw_only=True)
class DataSet:
    """Everything a run's data sync does."""

    folder: Path
    """The launch folder (where a host sharing this machine's files finds them)."""
    files: tuple[DataFile, ...] = ()
    links: tuple[OutsideLink, ...] = ()
    host_paths: tuple[str, ...] = ()
    """``[run] data`` paths outside the folder, and the script's arguments that are absolute
    paths on this machine (``arg_paths``): every host must have them already."""
    arg_paths: tuple[str, ...] = ()
    """The script's arguments (or ``--flag=`` values) that are absolute paths existing here."""
    hashes: HashCache | None = field(default=None, compare=False)
    """Where this machine keeps the digests (the hosts' digests of new files learned in)."""

    @property
    def size(self) -> int:
        """Bytes of every file (each counted once per place it is linked)."""
        return sum(f.size for f in self.files)

    def unique(self) -> dict[str, DataFile]:
        """One hashed file per sha256 (what a cache holds)."""
        return {f.sha256: f for f in self.files if f.sha256 is not None}

    def new(self) -> tuple[DataFile, ...]:
        """The files not hashed yet: every host that does not see this machine's files gets
        them (but see ``hash_alike``)."""
        return tuple(f for f in self.files if f.sha256 is None)


def _files_under(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` (itself if a file), links inside it followed no further."""
    if root.is_file():
        yield root
        return
    for directory, _, names in os.walk(root):
        for name in sorted(names):
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                yield path


def named_files(folder: Path, rel: str) -> dict[str, Path]:
    """``[run] data``'s path ``rel`` inside ``folder``: every regular file under it (through the
    link ``rel`` itself, when it is one), by its path in the working directory."""
    root = folder / rel
    target = root.resolve()
    return {str(Path(rel, path.relative_to(target)).as_posix()) if path != target else rel: path
            for path in _files_under(target)}


def _safe(rel: str) -> None:
    if "\n" in rel or "\t" in rel:
        raise UsageError(f"data file {rel!r} has a tab or a newline in its name; rename it, or "
                         "leave it out with a line in .corralignore",
                         title="a data file cannot be sent")
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:  # bytes the file system had that are no UTF-8 (surrogates)
        shown = rel.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        raise UsageError(f"data file {shown} has a name that is not UTF-8, which the hosts' "
                         "link lists cannot hold: rename it, or leave it out with a line in "
                         ".corralignore", title="a data file cannot be sent") from None


class HashCache:
    """sha256 by (path, size, mtime): an unchanged file is hashed once, on this machine."""

    def __init__(self, path: Path = HASH_CACHE) -> None:
        self.path = path.expanduser()
        self.entries: dict[str, list[object]] = {}
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(self.path.read_text())
            if isinstance(loaded, dict):
                self.entries = loaded
        self.changed = False

    def known(self, path: Path, size: int, mtime_ns: int) -> str | None:
        """The file's sha256 when it was hashed at this size and modification time."""
        entry = self.entries.get(str(path.absolute()))
        if isinstance(entry, list) and entry[:2] == [size, mtime_ns]:
            return str(entry[2])
        return None

    def learn(self, file: DataFile, sha256: str) -> None:
        """Keep ``file``'s digest (a host's, or this machine's); a digest that differs from
        one learned for the same size and time means the file changed as it was read."""
        if self.known(file.source, file.size, file.mtime_ns) not in (None, sha256):
            raise UsageError(f"{file.source} changed while it was being sent: run again once "
                             "nothing writes to it", title="a data file changed")
        self.entries[str(file.source.absolute())] = [file.size, file.mtime_ns, sha256]
        self.changed = True

    def sha256(self, file: DataFile) -> str:
        """``file``'s sha256, hashed here unless known (called from ``HASH_THREADS`` threads
        at once: each sets its own file's entry)."""
        if (known := self.known(file.source, file.size, file.mtime_ns)) is not None:
            return known
        digest = hashlib.sha256()
        with file.source.open("rb") as source:
            while chunk := source.read(CHUNK_BYTES):
                digest.update(chunk)
        if _stamp(file.source) != (file.size, file.mtime_ns):
            raise UsageError(f"{file.source} changed while it was being hashed: run again "
                             "once nothing writes to it", title="a data file changed")
        self.learn(file, digest.hexdigest())
        return digest.hexdigest()

    def save(self) -> None:
        """Write the cache whole or not at all (a temporary file renamed), private."""
        if not self.changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".data-hashes.")
        with os.fdopen(fd, "w") as out:
            json.dump(self.entries, out)
        os.replace(tmp, self.path)


def _stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


def data_set(folder: Path, sources: dict[str, Path], links: dict[str, str],
             host_paths: tuple[str, ...] = (), cache: HashCache | None = None) -> DataSet:
    """The ``DataSet`` of ``sources`` (path in the working directory → file here), each file's
    sha256 from ``cache`` when known (nothing hashed: see the module's docstring); ``links``:
    the folder's links out of it (path → target), not followed."""
    cache = cache if cache is not None else HashCache()
    files = []
    for rel, path in sorted(sources.items()):
        _safe(rel)
        size, mtime_ns = _stamp(path)
        files.append(DataFile(rel=rel, source=path, size=size, mtime_ns=mtime_ns,
                              sha256=cache.known(path, size, mtime_ns)))
    outside = []
    for rel, _ in sorted(links.items()):
        try:
            target = (folder / rel).resolve()
        except (OSError, RuntimeError):  # a loop of links: left out, as the push says
            continue
        if rel not in sources:
            _safe(rel)
            outside.append(OutsideLink(rel=rel, target=str(target)))
    return DataSet(folder=folder, files=tuple(files), links=tuple(outside), host_paths=host_paths,
                   hashes=cache)


def hash_alike(data: DataSet, sizes: Collection[int]) -> DataSet:
    """``data`` with its new files of the ``sizes`` some host caches a file of hashed here
    (``HASH_THREADS`` at once), so that a host holding one already is not sent it again."""
    alike = [f for f in data.new() if f.size in sizes]
    if not alike:
        return data
    cache = data.hashes if data.hashes is not None else HashCache()
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as hashing:
        hashed = dict(zip([f.rel for f in alike], hashing.map(cache.sha256, alike), strict=True))
    cache.save()
    return replace(data, files=tuple(replace(f, sha256=hashed[f.rel]) if f.rel in hashed else f
                                     for f in data.files))


def inside(folder: Path, written: str, base: Path) -> str | None:
    """``[run] data``'s path ``written`` relative to the launch ``folder`` when it lies inside
    it (the link itself, not followed); None for a path outside (one the hosts have)."""
    path = Path(os.path.abspath(base / Path(written).expanduser()))
    root = folder.resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else None


def _sources(folder: Path, data: tuple[str, ...], base: Path
             ) -> tuple[dict[str, Path], list[str]]:
    """The files ``[run] data``'s paths inside ``folder`` send (by their path in the working
    directory), and its paths outside it."""
    sources: dict[str, Path] = {}
    outside = []
    for written in data:
        rel = inside(folder, written, base)
        if rel is None:
            outside.append(written)
        else:
            sources.update(named_files(folder, rel))
    return sources, outside


def collect(folder: Path, data: bool | tuple[str, ...], base: Path,
            cache: HashCache | None = None) -> DataSet:
    """The run's ``DataSet``: the launch folder's data (``data = false``: none), the paths
    ``[run] data`` names inside it (followed: a link's target's files under the link's name)
    and outside it (what the hosts have); ``base`` is cluster.toml's folder."""
    if data is False:
        return DataSet(folder=folder)
    named = data if isinstance(data, tuple) else ()
    tree = walk_tree(folder)
    extra, host_paths = _sources(folder, named, base)
    sources = {rel: folder / rel for rel in tree.data} | extra
    inside_named = [rel for rel in (inside(folder, w, base) for w in named) if rel is not None]
    links = {rel: why for rel, why in tree.left_out.items() if (folder / rel).is_symlink()
             and not any(rel == n or rel.startswith(n + "/") for n in inside_named)}
    return data_set(folder, sources, links, tuple(host_paths), cache)


def absolute_args(args: tuple[str, ...]) -> tuple[str, ...]:
    """The arguments (or the values of ``--flag=value``) that are absolute paths existing on
    this machine: the script reads them there, so every host must have them too."""
    found = []
    for arg in args:
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        if os.path.isabs(value) and os.path.exists(value):
            found.append(os.path.normpath(value))
    return tuple(dict.fromkeys(found))


def arg_problem(host: str, data: DataSet, missing: tuple[str, ...]) -> str | None:
    """Why ``host`` cannot run the script: an absolute path among its arguments that exists on
    this machine and not on ``host`` (``missing``: the paths it lacks), with the fix."""
    lacking = [path for path in data.arg_paths if path in missing]
    if not lacking:
        return None
    root = data.folder.resolve()
    said = []
    for path in lacking:
        if Path(path).is_relative_to(root):
            rel = Path(path).relative_to(root).as_posix()
            said.append(f"the argument {path} is in the launch folder, which {host} receives "
                        f"in its own working directory: pass it relative ({rel})")
        else:
            said.append(f"the argument {path} exists on this machine but not on {host}: put "
                        f"it there at the same path, or move it into the launch folder and "
                        f"pass it by a relative path (it is then sent)")
    return "; ".join(said)


def data_line(folder: Path, data: bool | tuple[str, ...], base: Path) -> str | None:
    """What data will travel, in one line, from sizes alone (nothing read or hashed): for
    ``corral check`` and ``--dry-run``; None when there is none."""
    if data is False:
        return "no data sent ([run] data = false)"
    extra, outside = _sources(folder, data if isinstance(data, tuple) else (), base)
    sizes = dict(walk_tree(folder).data) | {rel: path.stat().st_size
                                            for rel, path in extra.items()}
    if not sizes and not outside:
        return None
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:3]
    files = f"{len(sizes)} file" + ("" if len(sizes) == 1 else "s")
    parts = [f"{files}, {mib(sum(sizes.values()))} by the data sync "
             "(cached per host: only what changed is sent; in place where a host sees this "
             "machine's files)"] if sizes else []
    if largest:
        parts.append("largest " + ", ".join(f"{rel} ({mib(size)})" for rel, size in largest))
    if outside:
        parts.append("on every host already: " + ", ".join(outside))
    return "data: " + "; ".join(parts)
