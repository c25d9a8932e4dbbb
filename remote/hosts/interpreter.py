"""Which Python a host runs: the one place that decides a host's interpreter.

``[[hosts]] python`` when given; otherwise the virtual environment ``corral setup`` made under
the host's workdir (``<workdir>/venv``) when it exists there, else the interpreter running
corral for a ``local`` host (so a corral installed in a virtual environment uses that
environment's torch) and ``python3`` from PATH on an SSH host. The choice between the set-up
environment and the fallback is made by the host's shell, at the moment a command runs.
"""

from __future__ import annotations

import shlex
import sys

from remote.config.cluster import HostSection
from remote.hosts.transport import shell_path

VENV_DIR = "venv"
"""The directory under a host's workdir that ``corral setup`` makes its environment in."""


def venv_dir(host: HostSection) -> str:
    """``<workdir>/venv`` as written in cluster.toml (a leading ``~`` kept)."""
    return f"{host.workdir.rstrip('/')}/{VENV_DIR}"


def venv_python(host: HostSection) -> str:
    """The set-up environment's interpreter on ``host`` (a leading ``~`` kept)."""
    return f"{venv_dir(host)}/bin/python"


def fallback_python(host: HostSection) -> str:
    """The interpreter used when cluster.toml names none and there is no set-up environment."""
    return sys.executable if host.is_local else "python3"


def python_word(host: HostSection) -> str:
    """The host's interpreter as one word of a POSIX shell command line (quoted)."""
    if host.python is not None:
        return shlex.quote(host.python)
    venv = shell_path(venv_python(host))
    fallback = shlex.quote(fallback_python(host))
    return f'"$(p={venv}; if [ -x "$p" ]; then echo "$p"; else echo {fallback}; fi)"'


def python_label(host: HostSection) -> str:
    """The host's interpreter as a person reads it (in check results and errors)."""
    if host.python is not None:
        return host.python
    return f"{venv_python(host)} if set up, else {fallback_python(host)}"
