"""Which Python a host runs: the one place that decides a host's interpreter.

``[[hosts]] python`` when given; otherwise the virtual environment ``corral setup`` made under
the host's workdir (``<workdir>/venv``) when it exists there, else the interpreter running
corral for a ``local`` host (so a corral installed in a virtual environment uses that
environment's torch) and ``python3`` from PATH on an SSH host. The choice between the set-up
environment and the fallback is made by the host's shell, at the moment a command runs.
Here too: how a probe runs Python code on a host (``python_c``), reads its JSON answer
(``last_json``), and the probe asking a host its Python and torch (``corral check`` and
``corral setup``).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from remote.config.cluster import HostSection
from remote.hosts.container import python_in_container
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
    """The host's interpreter as one word of a POSIX shell command line (quoted); on a host
    with a container, the container running its interpreter (several words)."""
    if host.container is not None:
        return python_in_container(host)
    if host.python is not None:
        return shlex.quote(host.python)
    venv = shell_path(venv_python(host))
    fallback = shlex.quote(fallback_python(host))
    return f'"$(p={venv}; if [ -x "$p" ]; then echo "$p"; else echo {fallback}; fi)"'


def python_label(host: HostSection) -> str:
    """The host's interpreter as a person reads it (in check results and errors)."""
    if host.container is not None:
        where = host.container.image or f"rootfs {host.container.rootfs}"
        return f"{host.python or host.container.python} in {where}"
    if host.python is not None:
        return host.python
    return f"{venv_python(host)} if set up, else {fallback_python(host)}"


def python_c(host: HostSection, code: str, *args: str) -> str:
    """``python -c CODE ARGS`` on ``host`` with its env table, every word quoted."""
    quoted = "".join(" " + shlex.quote(a) for a in args)
    return f"{python_word(host)} -c {shlex.quote(code)}{quoted}"


def last_json(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that is a JSON object, None if there is none."""
    for line in reversed(text.strip().splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(line)
            if isinstance(value, dict):
                return value
    return None


PROBE_PYTHON = (3, 7)
"""The oldest Python the torch probe's own code runs on (an older one is only named)."""


def _gated(source: str) -> str:
    """``source`` run where Python is ``PROBE_PYTHON`` or newer; an older one (which could not
    compile it) still says its version, so that the check names the fix."""
    oldest = ".".join(map(str, PROBE_PYTHON))
    too_old = {"torch_error": f"not asked: Python older than {oldest}"}
    return ("import json, platform, sys\n"
            f"if sys.version_info < {PROBE_PYTHON}:\n"
            "    print(json.dumps(dict(python=platform.python_version(), "
            f"executable=sys.executable, **{too_old!r})))\n"
            "else:\n"
            f"    exec(compile({source!a}, 'torch_probe.py', 'exec'))\n")


TORCH_PROBE_PY = _gated(Path(__file__).with_name("torch_probe.py").read_text(encoding="utf-8"))
"""The probe asking a host its Python, its torch and the GPUs torch sees there, as ``python -c``
code (``remote/hosts/torch_probe.py`` says what it prints and when it imports torch)."""
