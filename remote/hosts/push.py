"""Push the ``trainer`` and ``profiles`` packages (and a user task's folder) to a host,
content-addressed.

The packages go to ``<workdir>/code/<sha256 of the files>`` as one tar stream over the command
channel (stdin of ``tar -x``), unpacked into a temporary directory that is renamed into place
only when complete, so a host never runs a half-written tree. Every tree carries its manifest
(``MANIFEST``: sha256sum's line for each file, and for ``LISTING``, every entry and link
target), and its digest is the manifest's sha256: a tree found on a host is reused only when
``verify_command`` finds it whole and unchanged (an edited, added or removed file, a
retargeted link), and sent again otherwise. Each push also prunes the cache: the
``KEEP_TREES`` most recently used trees stay, and older ones unused for ``KEEP_DAYS`` days go;
the prune never fails the push.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import shlex
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from profiles.user_errors import CorralError, UsageError
from remote.config.task_code import USER_CODE_DIR
from remote.hosts.push_tree import CODE_TREE_MARKER, PushTree, budget_problem, walk_tree
from remote.hosts.transport import Transport, shell_path

PUSHED_PACKAGES = ("trainer", "profiles")
MARKER = CODE_TREE_MARKER
"""Written last into a pushed tree: its presence means the tree is complete."""
MANIFEST = ".corral-manifest"
"""In every pushed tree: ``sha256sum -c``'s line for each regular file and for ``LISTING``
(sorted by path); the tree's digest is this file's sha256."""
LISTING = ".corral-listing"
"""In every pushed tree: each entry (directory, file, link and its target) as
``LISTING_FIND`` prints it, sorted bytewise: a file added to a tree is found."""
LISTING_FIND = (f"find . -mindepth 1 -name __pycache__ -prune -o ! -name {MARKER} "
                "-printf '%y %p %l\\n'")
"""How a host lists a tree for ``LISTING`` (Python's byte-code caches and the marker, written
there after the push, aside)."""
PUSH_TIMEOUT_S = 120.0
KEEP_TREES = 8
"""Pushed trees a host keeps whatever their age: the most recently used."""
KEEP_DAYS = 7
"""Beyond the newest ``KEEP_TREES``, a tree unused this many days is removed at the next push
(a launch that finds its tree present marks it used)."""


@dataclass(frozen=True, kw_only=True)
class CodeBundle:
    """The pushed packages as one tar archive and its content hash."""

    digest: str
    """sha256 of the tree's ``MANIFEST`` (names the remote directory): every file's path and
    bytes and every link's target."""
    tar: bytes
    files: int


def package_files(packages: tuple[str, ...] = PUSHED_PACKAGES) -> list[tuple[str, Path]]:
    """``(relative path, file)`` for every file of ``packages``, sorted, without caches."""
    found: list[tuple[str, Path]] = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise CorralError(f"cannot find the {name!r} package to push (is corral installed?)")
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root.parent)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
                found.append((rel.as_posix(), path))
    return sorted(found)


def folder_files(folder: Path, prefix: str) -> list[tuple[str, Path]]:
    """``(prefix/relative path, file)`` for every regular file under ``folder`` that is code:
    not ignored by ``push_ignore`` (logs, checkpoints, caches, hidden entries,
    ``.gitignore``/``.corralignore``), links and special files aside (``push_tree``)."""
    return [(f"{prefix}/{rel}", folder / rel) for rel in walk_tree(folder).files]


def user_tree(folder: Path, *, with_data: bool = False) -> PushTree:
    """The user folder's ``PushTree`` (``with_data``: its data files pushed as code, where no
    data sync sends them: a task's folder, a Kubernetes pod); a ``UsageError`` naming the
    largest files when it is over the size budget (before any file is read)."""
    tree = walk_tree(folder)
    if with_data:
        tree = replace(tree, files=dict(sorted((tree.files | tree.data).items())), data={})
    if (problem := budget_problem(folder, tree)) is not None:
        raise UsageError(problem, title=f"the code folder {folder.name} is too large to push")
    return tree


def _tar_entry(tar: tarfile.TarFile, rel: str, data: bytes) -> None:
    """One regular file into the archive (fixed mode, time and owner)."""
    info = tarfile.TarInfo(rel)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def _tar_link(tar: tarfile.TarFile, rel: str, target: str) -> None:
    info = tarfile.TarInfo(rel)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mode = 0o777
    info.mtime = 0
    tar.addfile(info)


def _sum_line(sha: str, rel: str) -> str:
    """``sha256sum``'s line for ``rel`` (a name with a backslash or newline escaped its way)."""
    if "\\" in rel or "\n" in rel:
        return f"\\{sha}  " + rel.replace("\\", "\\\\").replace("\n", "\\n") + "\n"
    return f"{sha}  {rel}\n"


def _listing(files: list[str], links: dict[str, str]) -> bytes:
    """``LISTING``'s bytes for a tree of ``files`` and ``links`` (with its two own files):
    what ``LISTING_FIND`` prints on the host, sorted as ``LC_ALL=C sort`` sorts."""
    entries = [*files, *links, MANIFEST, LISTING]
    dirs = {str(parent) for rel in entries for parent in PurePosixPath(rel).parents} - {"."}
    lines = ([f"d ./{d} " for d in dirs] + [f"f ./{rel} " for rel in [*files, MANIFEST, LISTING]]
             + [f"l ./{rel} {target}" for rel, target in links.items()])
    return b"".join(line + b"\n" for line in sorted(line.encode() for line in lines))


def build_bundle(packages: tuple[str, ...] = PUSHED_PACKAGES, *,
                 user_folder: Path | None = None, with_data: bool = False) -> CodeBundle:
    """Hash and tar ``packages`` and a user task's folder (under ``USER_CODE_DIR``: its files
    and the links that stay inside it, within the size budget), in a deterministic archive:
    fixed order, times and owners, with the tree's ``LISTING`` and ``MANIFEST``."""
    files = package_files(packages)
    links: dict[str, str] = {}
    if user_folder is not None:
        tree = user_tree(user_folder, with_data=with_data)
        files += [(f"{USER_CODE_DIR}/{rel}", user_folder / rel) for rel in tree.files]
        links = {f"{USER_CODE_DIR}/{rel}": target for rel, target in tree.links.items()}
    listing = _listing([rel for rel, _ in files], links)
    sums: list[tuple[str, str]] = [(LISTING, hashlib.sha256(listing).hexdigest())]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, path in files:
            data = path.read_bytes()  # read once: what is hashed is what is sent
            sums.append((rel, hashlib.sha256(data).hexdigest()))
            _tar_entry(tar, rel, data)
        for rel, target in links.items():
            _tar_link(tar, rel, target)
        manifest = "".join(_sum_line(sha, rel) for rel, sha in sorted(sums, key=lambda s: s[0]))
        _tar_entry(tar, LISTING, listing)
        _tar_entry(tar, MANIFEST, manifest.encode())
    return CodeBundle(digest=hashlib.sha256(manifest.encode()).hexdigest(),
                      tar=buffer.getvalue(), files=len(files) + len(links))


def code_root(workdir: str) -> str:
    """The directory of every pushed tree on a host (unexpanded ``~`` kept)."""
    return f"{workdir.rstrip('/')}/code"


def code_dir(workdir: str, digest: str) -> str:
    """The pushed tree's directory on a host (unexpanded ``~`` kept)."""
    return f"{code_root(workdir)}/{digest}"


def verify_command(workdir: str, digest: str) -> str:
    """A shell command that exits 0 when the tree ``digest`` under ``workdir`` is complete and
    unchanged: its manifest hashes to the digest, every file matches the manifest and nothing
    was added (``LISTING``). Reading the tree once costs milliseconds; a host without GNU
    ``find``/``sha256sum`` fails it, and the tree is then sent each time, never trusted."""
    tree = shell_path(code_dir(workdir, digest))
    return (f"(cd {tree} && test -e {MARKER} && "
            f"printf '%s  %s\\n' {digest} {MANIFEST} | sha256sum -c --status - && "
            f"sha256sum -c --status --strict {MANIFEST} && "
            f"{LISTING_FIND} | LC_ALL=C sort | cmp -s - {LISTING}) >/dev/null 2>&1")


def present_command(workdir: str, digest: str) -> str:
    """A shell command that exits 0 when the tree ``digest`` is complete and unchanged under
    ``workdir`` (``verify_command``), and marks it used, for ``prune_command``."""
    return f"{verify_command(workdir, digest)} && touch {shell_path(code_dir(workdir, digest))}"


def prune_command(workdir: str) -> str:
    """Shell: remove the pushed trees beyond the ``KEEP_TREES`` most recently used that nobody
    used for ``KEEP_DAYS`` days (the code cache would otherwise grow by a tree per change).

    It cannot fail the script it ends (a ``set -e`` one): a tree kept is no error (``if``, not
    ``&&``, so the loop's status is 0), and whatever else goes wrong (a tree removed by another
    push meanwhile) is ignored: the prune is housekeeping, the push has already landed."""
    root = shell_path(code_root(workdir))
    return (f"(cd {root} && ls -1t | grep -E '^[0-9a-f]{{64}}$' | tail -n +{KEEP_TREES + 1} | "
            f"while read -r old; do "
            f"if [ -n \"$(find \"$old\" -maxdepth 0 -mtime +{KEEP_DAYS})\" ]; "
            f"then rm -rf \"$old\"; fi; done) || true")


async def push_code(transport: Transport, bundle: CodeBundle, *,
                    present: bool | None = None) -> bool:
    """Make ``bundle`` present on ``transport``'s host; True when it had to be sent.

    ``present`` is what an earlier probe found (``present_command``); None asks the host.
    """
    final = shell_path(code_dir(transport.host.workdir, bundle.digest))
    marker = f"{final}/{MARKER}"
    if present is None:
        command = present_command(transport.host.workdir, bundle.digest)
        present = (await transport.run(command, timeout=30.0)).ok
    if present:
        return False
    parent = shell_path(code_root(transport.host.workdir))
    # Unpack beside the final directory, mark complete, then rename it into place: atomic on
    # one filesystem. Hosts that share a workdir (local hosts, one home over NFS) may push the
    # same tree at once: `mv -T` refuses to land on a directory that exists, so the first rename
    # wins and the others drop their copy, and nobody removes a tree another host may be using.
    # A tree that fails its check (no marker, an edited file) is set aside before ours takes
    # its place.
    intact = verify_command(transport.host.workdir, bundle.digest)
    script = (
        f"set -e; mkdir -p {parent}; tmp=$(mktemp -d {parent}/.push.XXXXXX); "
        f'trap \'rm -rf "$tmp"\' EXIT; tar -x -f - -C "$tmp"; touch "$tmp"/{shlex.quote(MARKER)}; '
        f'if ! {intact} && ! mv -T "$tmp" {final} 2>/dev/null && ! {intact}; then '
        f"old=$(mktemp -d {parent}/.stale.XXXXXX); "
        f'mv -T {final} "$old/tree" 2>/dev/null || true; rm -rf "$old"; '
        f'mv -T "$tmp" {final} 2>/dev/null || true; fi; '
        f"test -e {marker} || {{ echo \"corral: the pushed tree did not land in \"{final} >&2; "
        f"exit 1; }}; {prune_command(transport.host.workdir)}"
    )
    await transport.run(script, check=True, timeout=PUSH_TIMEOUT_S, input=bundle.tar)
    return True
