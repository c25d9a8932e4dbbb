"""Push the ``trainer`` and ``profiles`` packages (and a user task's folder) to a host,
content-addressed.

The packages go to ``<workdir>/code/<sha256 of the files>`` as one tar stream over the command
channel (stdin of ``tar -x``), unpacked into a temporary directory that is renamed into place
only when complete, so a host never runs a half-written tree. An unchanged tree (the final
directory exists with its marker file) is not sent again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path

from profiles.user_errors import CorralError
from remote.config.task_code import USER_CODE_DIR
from remote.hosts.push_ignore import pushed_files
from remote.hosts.transport import Transport, shell_path

PUSHED_PACKAGES = ("trainer", "profiles")
MARKER = ".corral-complete"
"""Written last into a pushed tree: its presence means the tree is complete."""
PUSH_TIMEOUT_S = 120.0


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
    """``(prefix/relative path, file)`` for every file under ``folder`` that is code: not
    ignored by ``push_ignore`` (logs, checkpoints, caches, hidden entries, ``.corralignore``)."""
    return [(f"{prefix}/{path.relative_to(folder).as_posix()}", path)
            for path in pushed_files(folder)]


def build_bundle(packages: tuple[str, ...] = PUSHED_PACKAGES, *,
                 user_folder: Path | None = None) -> CodeBundle:
    """Hash and tar ``packages`` and a user task's folder (under ``USER_CODE_DIR``), in a
    deterministic archive: fixed order, times and owners."""
    files = package_files(packages)
    if user_folder is not None:
        files += folder_files(user_folder, USER_CODE_DIR)
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, path in files:
            data = path.read_bytes()
            digest.update(rel.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return CodeBundle(digest=digest.hexdigest(), tar=buffer.getvalue(), files=len(files))


def code_root(workdir: str) -> str:
    """The directory of every pushed tree on a host (unexpanded ``~`` kept)."""
    return f"{workdir.rstrip('/')}/code"


def code_dir(workdir: str, digest: str) -> str:
    """The pushed tree's directory on a host (unexpanded ``~`` kept)."""
    return f"{code_root(workdir)}/{digest}"


def present_command(workdir: str, digest: str) -> str:
    """A shell command that exits 0 when the tree ``digest`` is complete under ``workdir``."""
    return f"test -e {shell_path(code_dir(workdir, digest))}/{MARKER}"


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
    # Unpack beside the final directory, mark complete, then rename: atomic on one filesystem.
    # A concurrent push of the same tree loses the rename race harmlessly.
    script = (
        f"set -e; mkdir -p {parent}; tmp=$(mktemp -d {parent}/.push.XXXXXX); "
        f'trap \'rm -rf "$tmp"\' EXIT; tar -x -f - -C "$tmp"; touch "$tmp"/{shlex.quote(MARKER)}; '
        f"if [ ! -e {marker} ]; then rm -rf {final}; mv \"$tmp\" {final}; fi"
    )
    await transport.run(script, check=True, timeout=PUSH_TIMEOUT_S, input=bundle.tar)
    return True
