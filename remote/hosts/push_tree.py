"""What of a user's folder travels: its code files, its links that stay inside it, within a
size budget; never what the user did not mean to send.

``walk_tree`` walks the folder as ``remote.hosts.push_ignore`` allows and sorts every entry:

- a regular file is pushed as code, or sent as data by the data sync (``data``);
- a symbolic link whose target lies inside the folder is pushed as a link (relative, so it
  points at the same file in every copy); one whose target lies outside it (``/etc/shadow``,
  ``~/.ssh/id_ed25519``, a dataset elsewhere) or does not exist is never followed: it is left
  out and named, so its target's bytes never leave this machine;
- a corral cluster file (a ``.toml`` with a ``[[hosts]]`` table: every host's ``env``, secrets
  among them) stays on this machine, left out and named: the ranks never read it;
- anything else (a FIFO, a socket, a device) is left out and named.

``budget_problem`` names, before anything is read or sent, the files that take the folder past
``PUSH_BUDGET_BYTES``, largest first, with the fix.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from remote.hosts.push_ignore import IGNORE_FILE, folder_rules

PUSH_BUDGET_BYTES = 64 * 2**20
"""The most a pushed user folder may hold (64 MiB): it goes to every host and is copied into
every host's working directory of a run (docs/scripts.md)."""
CODE_TREE_MARKER = ".corral-complete"
"""What marks a complete pushed tree (``remote.hosts.push.MARKER``): a folder of such trees (a
local host's code cache inside the user's folder) is never pushed."""
MAX_FILES = 20_000
"""The most files a pushed folder may hold; the walk stops past it (a home directory launched
from by mistake is named at once, not walked for minutes)."""
NAMED_AT_MOST = 8
"""The largest files a budget problem names one by one."""
CODE_FILE_BYTES = 2**20
"""A file larger than this (1 MiB) travels by the data sync whatever its name (weights, a
shard): content-addressed, sent once per host, never copied into every pushed tree."""
VENV_MARKERS = ("pyvenv.cfg", "conda-meta")
"""What makes a directory a virtual environment whatever its name (left out: it cannot
matter to a run on another machine)."""


CLUSTER_FILE_HOME = "a corral cluster file (every host's env in it): it stays on this machine"
"""Why a cluster file is left out of every push (``cluster_file``)."""
HOSTS_TABLE = re.compile(r"^\s*\[\[\s*hosts\s*\]\]", re.MULTILINE)


@dataclass(frozen=True, kw_only=True)
class PushTree:
    """A user folder's entries, sorted by what a push does with them."""

    files: dict[str, int] = field(default_factory=dict)
    """Relative POSIX path → size in bytes, for every regular file pushed."""
    data: dict[str, int] = field(default_factory=dict)
    """Relative POSIX path → size in bytes, for every regular file that is data (sent by the
    data sync, never in the code tree)."""
    links: dict[str, str] = field(default_factory=dict)
    """Relative POSIX path → its relative target, for every link pushed as a link."""
    left_out: dict[str, str] = field(default_factory=dict)
    """Relative POSIX path → why it is not pushed (a link out of the folder, a FIFO...)."""
    home: dict[str, int] = field(default_factory=dict)
    """Relative POSIX path → bytes under it, for every entry ``.corralignore`` keeps home."""
    truncated: bool = False
    """The walk stopped at ``MAX_FILES`` files."""

    @property
    def size(self) -> int:
        """Bytes of every pushed file."""
        return sum(self.files.values())


def _inside_target(folder: Path, path: Path) -> str | None:
    """The link ``path``'s target relative to the link's own directory when it resolves to an
    existing entry inside ``folder``; None otherwise."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    root = folder.resolve()
    if target == root or not target.is_relative_to(root):
        return None
    return os.path.relpath(target, path.parent.resolve())


def _link_left_out(folder: Path, path: Path) -> str:
    """Why the link ``path`` (which ``_inside_target`` refused) is left out, in the words
    that fit it: only a target that lies outside ``folder`` is called outside."""
    said = f"a link to {os.readlink(path)}"
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # a loop of links
        return f"{said}, a loop of links (never followed)"
    root = folder.resolve()
    if target == root:
        return f"{said}, the folder itself (never followed)"
    if not target.is_relative_to(root):
        return f"{said}, outside the folder (never followed)"
    return f"{said}, which does not exist (a broken link)"


def _code_cache(directory: Path) -> bool:
    """Whether ``directory`` holds corral's pushed trees (``<workdir>/code``)."""
    try:
        return any((child / CODE_TREE_MARKER).exists() for child in directory.iterdir())
    except OSError:
        return False


def _run_dir(directory: Path) -> bool:
    """Whether ``directory`` is a run's (its ``run.json`` names it by its ``run_id``)."""
    try:
        with (directory / "run.json").open() as record:
            return bool(json.load(record).get("run_id") == directory.name)
    except (OSError, ValueError, AttributeError):
        return False


def _corral_own(directory: Path) -> bool:
    """Whether ``directory`` is corral's own, never the script's: a folder of pushed trees, a
    host's workdir (its ``code`` such a folder), or a run directory, as when the run root or a
    ``local`` host's workdir lies in the launch folder."""
    return _code_cache(directory) or _code_cache(directory / "code") or _run_dir(directory)


def cluster_file(path: Path, size: int) -> bool:
    """Whether ``path`` (``size`` bytes) is a corral cluster file: a ``.toml`` with a
    ``[[hosts]]`` table, read as text (one that would not parse holds the same secrets)."""
    if path.suffix != ".toml" or size > CODE_FILE_BYTES:
        return False
    try:
        return HOSTS_TABLE.search(path.read_text(encoding="utf-8", errors="replace")) is not None
    except OSError:
        return False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _venv(path: Path) -> bool:
    return any((path / marker).exists() for marker in VENV_MARKERS)


def bytes_under(path: Path) -> int:
    """Bytes of the regular files at or under ``path`` (links not followed)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size if path.is_file() and not path.is_symlink() else 0
    return sum(os.lstat(os.path.join(d, n)).st_size for d, _, names in os.walk(path)
               for n in names if os.path.isfile(os.path.join(d, n))
               and not os.path.islink(os.path.join(d, n)))


def walk_tree(folder: Path) -> PushTree:
    """Every entry of ``folder`` a push considers, sorted into a ``PushTree``."""
    rules = folder_rules(folder)
    tree = PushTree()
    pending: list[tuple[Path, bool]] = [(folder, False)]
    while pending and len(tree.files) <= MAX_FILES:  # not rglob: an ignored folder is not walked
        directory, in_data = pending.pop()
        for path in directory.iterdir():
            rel = PurePosixPath(path.relative_to(folder).as_posix())
            info = path.lstat()
            is_dir = stat.S_ISDIR(info.st_mode)
            is_package = is_dir and (path / "__init__.py").is_file()
            kind = rules.kind(rel, is_dir, is_package=is_package, in_data=in_data)
            if kind is None:
                if rules.own_keeps_home(rel, is_dir):
                    tree.home[str(rel)] = bytes_under(path)
                continue
            if is_dir and _venv(path) and rules.own_says(rel, is_dir) is None:
                continue
            if kind == "code" and stat.S_ISREG(info.st_mode) and info.st_size > CODE_FILE_BYTES:
                kind = "data"
            if stat.S_ISLNK(info.st_mode):
                target = _inside_target(folder, path)
                if target is None:
                    tree.left_out[str(rel)] = _link_left_out(folder, path)
                else:
                    tree.links[str(rel)] = target
            elif is_dir:
                if not _corral_own(path):
                    pending.append((path, kind == "data"))
            elif stat.S_ISREG(info.st_mode) and cluster_file(path, info.st_size):
                tree.left_out[str(rel)] = CLUSTER_FILE_HOME
            elif stat.S_ISREG(info.st_mode):
                (tree.data if kind == "data" else tree.files)[str(rel)] = info.st_size
            else:
                tree.left_out[str(rel)] = _kind(info.st_mode)
    return PushTree(files=dict(sorted(tree.files.items())), data=dict(sorted(tree.data.items())),
                    links=dict(sorted(tree.links.items())),
                    left_out=dict(sorted(tree.left_out.items())),
                    home=dict(sorted(tree.home.items())), truncated=len(tree.files) > MAX_FILES)


def mib(size: int) -> str:
    """``size`` bytes as the user reads them: ``12.3 MiB``."""
    return f"{size / 2**20:.1f} MiB"


def budget_problem(folder: Path, tree: PushTree, budget: int = PUSH_BUDGET_BYTES) -> str | None:
    """One message naming the largest files when ``tree`` holds more than ``budget`` bytes,
    with the fix; None within it."""
    if tree.truncated:
        return (f"{folder} holds more than {MAX_FILES} files to push: is it the folder the "
                "script belongs to? Launch from the repository's root, or set [run] code")
    if tree.size <= budget:
        return None
    largest = sorted(tree.files.items(), key=lambda item: (-item[1], item[0]))[:NAMED_AT_MOST]
    named = "; ".join(f"{rel} ({mib(size)})" for rel, size in largest)
    return (f"{folder} holds {mib(tree.size)} to push, over the {mib(budget)} budget of "
            f"code that travels to every host: {named}. Leave data and outputs out (a line "
            f"such as {largest[0][0]} or its folder in {folder / IGNORE_FILE}), and put them "
            "on the hosts where the script reads them by path")


def home_line(tree: PushTree) -> str | None:
    """One line naming what ``.corralignore`` keeps home, with sizes, largest first."""
    if not tree.home:
        return None
    largest = sorted(tree.home.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{rel} ({mib(size)})" for rel, size in largest[:NAMED_AT_MOST])
    more = f" and {len(largest) - NAMED_AT_MOST} more" if len(largest) > NAMED_AT_MOST else ""
    return f"stays home ({IGNORE_FILE}): {shown}{more}"


def left_out_line(tree: PushTree) -> str | None:
    """One line naming what the push leaves out of the folder although no pattern says so."""
    if not tree.left_out:
        return None
    return "not pushed: " + "; ".join(f"{rel} ({why})" for rel, why in tree.left_out.items())
