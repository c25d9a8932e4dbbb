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


# One JSON object: the interpreter's and torch's versions and what CUDA torch sees. torch is
# imported only where a GPU device node exists (importing it takes seconds): NVIDIA's, AMD's,
# or WSL2's /dev/dxg, through which torch reaches the GPU with the driver in /usr/lib/wsl/lib.
TORCH_PROBE_PY = """\
import importlib.util, json, os, platform, sys
out = {"python": platform.python_version(), "executable": sys.executable}
spec = importlib.util.find_spec("torch")
version = None
if spec is not None and spec.origin:
    try:
        with open(os.path.join(os.path.dirname(spec.origin), "version.py")) as f:
            for line in f:
                if line.startswith("__version__"):
                    version = line.split("=", 1)[1].strip().strip(chr(34) + chr(39))
    except OSError:
        pass
gpu_nodes = any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg"))
try:
    if spec is None:
        raise ImportError("No module named 'torch'")
    if version is None or gpu_nodes:
        import torch
        version = torch.__version__
        cuda = bool(torch.cuda.is_available())
        gpus = torch.cuda.device_count() if cuda else 0
        out.update(cuda=cuda, gpus=gpus, cuda_version=torch.version.cuda,
                   gpu_names=[torch.cuda.get_device_name(i) for i in range(gpus)])
        try: out["bf16"] = [torch.cuda.get_device_capability(i)[0] >= 8 for i in range(gpus)]
        except Exception: pass  # no answer (an old or fake torch): nothing to check
    out.update(torch=version.split("+")[0], torch_full=version)
except Exception as exc:
    out["torch_error"] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""
