"""Push the ``trainer`` and ``profiles`` packages (and a user task's folder) to a host,
content-addressed.

The packages go to ``<workdir>/code/<sha256 of the files>`` as one tar stream over the command
channel (stdin of ``tar -x``), unpacked into a temporary directory that is renamed into place
only when complete, so a host never runs a half-written tree. An unchanged tree (the final
directory exists with its marker file) is not sent again. Each push also prunes the cache: the
``KEEP_TREES`` most recently used trees stay, and older ones unused for ``KEEP_DAYS`` days go.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import shlex
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

from profiles.user_errors import CorralError, UsageError
from remote.config.task_code import USER_CODE_DIR
from remote.hosts.push_tree import CODE_TREE_MARKER, PushTree, budget_problem, walk_tree
from remote.hosts.transport import Transport, shell_path

PUSHED_PACKAGES = ("trainer", "profiles")
MARKER = CODE_TREE_MARKER
"""Written last into a pushed tree: its presence means the tree is complete."""
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
    """sha256 over every file's relative path and bytes (names the remote directory)."""
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


def _add_file(tar: tarfile.TarFile, digest: hashlib._Hash, rel: str, path: Path) -> None:
    """One file into the archive and the digest (its bytes read once)."""
    with path.open("rb") as source:
        data = source.read()
    digest.update(rel.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    info = tarfile.TarInfo(rel)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def _add_link(tar: tarfile.TarFile, digest: hashlib._Hash, rel: str, target: str) -> None:
    digest.update(rel.encode() + b"\1" + target.encode())
    info = tarfile.TarInfo(rel)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mode = 0o777
    info.mtime = 0
    tar.addfile(info)


def build_bundle(packages: tuple[str, ...] = PUSHED_PACKAGES, *,
                 user_folder: Path | None = None, with_data: bool = False) -> CodeBundle:
    """Hash and tar ``packages`` and a user task's folder (under ``USER_CODE_DIR``: its files
    and the links that stay inside it, within the size budget), in a deterministic archive:
    fixed order, times and owners."""
    files = package_files(packages)
    links: list[tuple[str, str]] = []
    if user_folder is not None:
        tree = user_tree(user_folder, with_data=with_data)
        files += [(f"{USER_CODE_DIR}/{rel}", user_folder / rel) for rel in tree.files]
        links = [(f"{USER_CODE_DIR}/{rel}", target) for rel, target in tree.links.items()]
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, path in files:
            _add_file(tar, digest, rel, path)
        for rel, target in links:
            _add_link(tar, digest, rel, target)
    return CodeBundle(digest=digest.hexdigest(), tar=buffer.getvalue(),
                      files=len(files) + len(links))


def code_root(workdir: str) -> str:
    """The directory of every pushed tree on a host (unexpanded ``~`` kept)."""
    return f"{workdir.rstrip('/')}/code"


def code_dir(workdir: str, digest: str) -> str:
    """The pushed tree's directory on a host (unexpanded ``~`` kept)."""
    return f"{code_root(workdir)}/{digest}"


def present_command(workdir: str, digest: str) -> str:
    """A shell command that exits 0 when the tree ``digest`` is complete under ``workdir``
    (and marks it used, for ``prune_command``)."""
    tree = shell_path(code_dir(workdir, digest))
    return f"test -e {tree}/{MARKER} && touch {tree}"


def prune_command(workdir: str) -> str:
    """Shell: remove the pushed trees beyond the ``KEEP_TREES`` most recently used that nobody
    used for ``KEEP_DAYS`` days (the code cache would otherwise grow by a tree per change)."""
    root = shell_path(code_root(workdir))
    return (f"(cd {root} && ls -1t | grep -E '^[0-9a-f]{{64}}$' | tail -n +{KEEP_TREES + 1} | "
            f"while read -r old; do [ -n \"$(find \"$old\" -maxdepth 0 -mtime +{KEEP_DAYS})\" ] "
            f"&& rm -rf \"$old\"; done; true)")


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
    # A tree without its marker (not made by a push) is set aside before ours takes its place.
    script = (
        f"set -e; mkdir -p {parent}; tmp=$(mktemp -d {parent}/.push.XXXXXX); "
        f'trap \'rm -rf "$tmp"\' EXIT; tar -x -f - -C "$tmp"; touch "$tmp"/{shlex.quote(MARKER)}; '
        f'if [ ! -e {marker} ] && ! mv -T "$tmp" {final} 2>/dev/null && [ ! -e {marker} ]; then '
        f"old=$(mktemp -d {parent}/.stale.XXXXXX); "
        f'mv -T {final} "$old/tree" 2>/dev/null || true; rm -rf "$old"; '
        f'mv -T "$tmp" {final} 2>/dev/null || true; fi; '
        f"test -e {marker} || {{ echo \"corral: the pushed tree did not land in \"{final} >&2; "
        f"exit 1; }}; {prune_command(transport.host.workdir)}"
    )
    await transport.run(script, check=True, timeout=PUSH_TIMEOUT_S, input=bundle.tar)
    return True
