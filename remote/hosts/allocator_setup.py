"""``corral setup``'s allocator step: give a host tcmalloc when its CPU ranks would use one.

CPU ranks run much faster with tcmalloc (or jemalloc) preloaded than with glibc's allocator
(see docs/benchmarks/balance.md, "CPU rank"). A host whose ``allocator`` is ``auto`` or
``tcmalloc`` and
has neither library gets tcmalloc from its package manager — as root, or through ``sudo``
that asks no password. Anything else (no root, no known package manager, a failing install) is
reported in one line and is not a failure: the ranks then use glibc, tuned.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from remote.config.cluster import HostSection
from trainer.placement import PRELOADED, SHELL_LIBRARY_DIRS, allocator_candidates

SETUP_PACKAGES: Mapping[str, tuple[str, ...]] = {
    "apt-get": ("libtcmalloc-minimal4",),
    "dnf": ("gperftools-libs",),
    "yum": ("gperftools-libs",),
    "zypper": ("libtcmalloc4",),
    "apk": ("gperftools",),
}
"""System packages that give a host tcmalloc, per package manager (for ``corral setup`` and
the check's advice)."""
INSTALL_COMMANDS: Mapping[str, str] = {
    "apt-get": "env DEBIAN_FRONTEND=noninteractive apt-get install -y -q",
    "dnf": "dnf install -y -q",
    "yum": "yum install -y -q",
    "zypper": "zypper --non-interactive install",
    "apk": "apk add --no-cache",
}
"""How each package manager of ``SETUP_PACKAGES`` installs without asking."""
WANTS_TCMALLOC = ("auto", "tcmalloc")
"""``allocator`` settings under which a host without tcmalloc or jemalloc gets tcmalloc."""
LINE = "allocator:"
"""The script's one line of output starts with this."""


def setup_advice() -> str:
    """How to install tcmalloc by hand, for messages (the two commonest package managers)."""
    return "; ".join(f"{tool} install {' '.join(p)}" for tool, p in
                     list(SETUP_PACKAGES.items())[:2])


def _install(tool: str) -> str:
    packages = " ".join(shlex.quote(p) for p in SETUP_PACKAGES[tool])
    command = f"$s {INSTALL_COMMANDS[tool]} {packages}"
    if tool == "apt-get":  # a fresh host may have no package lists yet
        command = f"{command} || {{ $s apt-get update -q && {command}; }}"
    return command


def _paths(host: HostSection) -> list[str]:
    names = PRELOADED if host.allocator == "auto" else ("tcmalloc",)
    return [path for name, path in allocator_candidates(SHELL_LIBRARY_DIRS) if name in names]


def found_script(host: HostSection, libraries: Sequence[str] | None = None) -> str:
    """Shell code printing the first of ``libraries`` (default: the tcmalloc, and for ``auto``
    jemalloc, files a rank looks for) that exists, or nothing."""
    # The paths hold ${...} expansions (CONDA_PREFIX, HOME): double-quoted on purpose.
    paths = " ".join(f'"{p}"' for p in (libraries if libraries is not None else _paths(host)))
    return f'for f in {paths}; do [ -e "$f" ] && {{ echo "$f"; break; }}; done; true'


def wants_install(host: HostSection, found: str) -> bool:
    """Whether ``corral setup`` installs tcmalloc on ``host``, given ``found_script``'s output."""
    return host.allocator in WANTS_TCMALLOC and not found.strip()


def install_script(host: HostSection, libraries: Sequence[str] | None = None) -> str:
    """Shell code (for ``sh -c``) that installs tcmalloc on ``host`` unless ``found_script``
    finds a library. Its last line of output starts with ``allocator:`` and says what
    happened; it exits 0 whatever happened (glibc, tuned, is the fallback)."""
    cases = " ".join(f"{tool}) {_install(tool)};;" for tool in SETUP_PACKAGES)
    no_root = shlex.quote(f"{LINE} no tcmalloc; installing it needs root ({setup_advice()})")
    return "\n".join([
        f"f=$({found_script(host, libraries)})",
        f'[ -z "$f" ] || {{ echo "{LINE} $f is there"; exit 0; }}',
        f"t=; for c in {' '.join(SETUP_PACKAGES)}; do "
        'command -v "$c" >/dev/null 2>&1 && { t=$c; break; }; done',
        f'[ -n "$t" ] || {{ echo "{LINE} no tcmalloc and no known package manager"; exit 0; }}',
        'if [ "$(id -u)" = 0 ]; then s=; '
        "elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then s='sudo -n'; "
        f"else echo {no_root}; exit 0; fi",
        f'case $t in {cases} esac && echo "{LINE} tcmalloc installed with $t" '
        f'|| echo "{LINE} installing tcmalloc with $t failed: CPU ranks use glibc, tuned"',
        "exit 0",
    ])


def outcome(output: str) -> str:
    """The script's ``allocator: ...`` line from its output (the last one)."""
    lines = [line.strip() for line in output.splitlines() if line.startswith(LINE)]
    return lines[-1] if lines else f"{LINE} the install step printed nothing"
