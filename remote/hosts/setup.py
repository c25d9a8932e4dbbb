"""``corral setup``: make hosts that have only Python able to run the trainer.

Per host, all hosts in parallel: the host's own ``setup`` lines first (each quoted, logged to
``<workdir>/setup.log`` and shown; a failing line is named with its host and number), then
tcmalloc for faster CPU ranks where the host's ``allocator`` would use it and it has neither
tcmalloc nor jemalloc (``remote.hosts.allocator_setup``: as root or with password-less sudo;
otherwise it says how, and the set-up goes on), then a virtual environment at
``<workdir>/venv`` (``remote.hosts.interpreter``) with the master's torch version: the CUDA
build where the host has NVIDIA GPUs (the driver version nvidia-smi reports picks the CUDA
flavour), the CPU build elsewhere, plus what the pushed packages import besides torch and the
packages the run's task needs (transformers and peft for ``causal_lm``). What
was installed is recorded in ``<workdir>/venv/corral-setup.json``; a host whose
record and environment already match (and that has its allocator, or wants none) is left
alone ("nothing to change"), and so is a host
whose cluster.toml entry names its ``python`` (that interpreter is the user's to manage).
Hosts set up here run ``<workdir>/venv/bin/python`` when their ``python`` is left out.
"""

from __future__ import annotations

import asyncio
import json
import shlex
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from profiles.user_errors import CorralError, UsageError
from remote.config.cluster import ClusterConfig, HostSection
from remote.config.task_code import needed_packages
from remote.hosts import container
from remote.hosts.allocator_setup import found_script, install_script, outcome, wants_install
from remote.hosts.interpreter import (
    TORCH_PROBE_PY,
    fallback_python,
    last_json,
    python_c,
    venv_dir,
    venv_python,
)
from remote.hosts.pool import HostPool
from remote.hosts.sections import section_text, sectioned_script, split_sections
from remote.hosts.transport import Transport, shell_path

CUDA_FLAVOURS = ((580, "cu130"), (525, "cu126"), (450, "cu118"))
"""(lowest NVIDIA driver major version, torch's CUDA flavour it runs): CUDA 13 needs driver
580+, CUDA 12.x 525+ (minor-version compatibility), CUDA 11.8 450+."""
HOST_PACKAGES = ("numpy",)
"""What the pushed packages import besides torch on every host (numpy: the CIFAR batches)."""
GPU_PACKAGES = ("nvidia-ml-py",)
"""Added where the host trains on GPUs (the NVML readings of ``profiles``)."""
STATE_FILE = "corral-setup.json"
PIP_TIMEOUT_S = 3600.0
"""A CUDA torch is a download of several GB."""

Progress = Callable[[str, str], None]
"""``progress(host, message)``: one line of a host's progress."""


@dataclass(frozen=True, kw_only=True)
class SetupResult:
    """How one host's set-up ended."""

    host: str
    ok: bool
    changed: bool
    """False when the host was already set up as wanted."""
    detail: str


@dataclass(frozen=True, kw_only=True)
class Wanted:
    """What a host's environment should hold."""

    torch: str
    """The exact requirement, e.g. ``2.13.0+cpu``."""
    index: str
    """The package index torch comes from ("" = the host's own pip configuration)."""
    packages: tuple[str, ...]
    setup: tuple[str, ...]
    """The host's setup lines that were run."""

    def record(self) -> dict[str, object]:
        """The state file's content."""
        return {"torch": self.torch, "index": self.index, "packages": list(self.packages),
                "setup": list(self.setup)}


def cuda_flavour(driver: str) -> str | None:
    """torch's CUDA flavour for an NVIDIA driver version (``"550.54.15"`` -> ``cu126``)."""
    major = driver.strip().split(".")[0]
    if not major.isdigit():
        return None
    return next((flavour for low, flavour in CUDA_FLAVOURS if int(major) >= low), None)


def wanted_for(host: HostSection, torch_version: str, driver: str,
               task_packages: tuple[str, ...] = ()) -> Wanted:
    """The environment ``host`` should get, given its NVIDIA driver version ("" = none) and
    the packages the run's task needs (``remote.config.task_code.needed_packages``)."""
    flavour = cuda_flavour(driver) if host.gpus != 0 else None
    build = flavour or "cpu"
    index = host.torch_index.replace("{flavour}", build)
    packages = HOST_PACKAGES + (GPU_PACKAGES if flavour else ()) + task_packages
    return Wanted(torch=f"{torch_version}+{build}", index=index, packages=packages,
                  setup=host.setup)


def _base_python(host: HostSection) -> str:
    """The interpreter the environment is made from, as a shell word."""
    return shlex.quote(fallback_python(host))


def probe_command(host: HostSection) -> str:
    """One command: the driver version, the base interpreter, the recorded state and the
    torch of an existing environment."""
    venv = shell_path(venv_python(host))
    version_py = ("import importlib.util as u, os; s = u.find_spec('torch'); "
                  "p = s and os.path.join(os.path.dirname(s.origin), 'version.py'); "
                  "print(open(p).read() if p and os.path.exists(p) else '')")
    return sectioned_script({
        "driver": "nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null "
                  "| head -n 1",
        "base": f"{_base_python(host)} -c 'import sys; print(sys.version_info >= (3, 10))' "
                "2>&1",
        "state": f"cat {shell_path(venv_dir(host) + '/' + STATE_FILE)} 2>/dev/null",
        "venv_torch": f"{venv} -c {shlex.quote(version_py)} 2>/dev/null",
        "allocator": found_script(host),
    })


def _installed_torch(version_py: str) -> str | None:
    for line in version_py.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("'\"")
    return None


async def master_torch(config: ClusterConfig, pool: HostPool) -> str:
    """torch's version on the master (without the build tag), else the one running here."""
    try:
        transport = await pool.get(config.master_name)
        done = await transport.run(python_c(config.master_host, TORCH_PROBE_PY), timeout=120.0)
        found = last_json(done.stdout) or {}
    except CorralError:
        found = {}
    if "torch" in found:
        return str(found["torch"])
    import torch  # corral's own dependency: the version the master's corral runs

    return str(torch.__version__).split("+")[0]


EXIT_MARK = "corral setup: exit status "
"""The line a step's script ends its output with (the stream carries no exit status)."""
TAIL_LINES = 40
"""Output lines of a step kept for its failure message."""
QUIET_PREFIXES = ("Requirement already satisfied",)
"""Output lines not shown as progress (pip lists every dependency it already has)."""


async def _run_logged(transport: Transport, command: str, shown: str, progress: Progress,
                      timeout: float) -> tuple[int, str]:
    """Run ``command`` in the host's workdir, appending ``$ shown`` and its output to
    ``setup.log`` there and showing each output line as progress while it runs (pip takes
    minutes); return the exit status (124 after ``timeout`` s) and the output's tail."""
    host = transport.host
    workdir = shell_path(host.workdir)
    log = shell_path(f"{host.workdir.rstrip('/')}/setup.log")
    progress(host.name, f"$ {shown}")
    script = (f"mkdir -p {workdir} && cd {workdir} && "
              f"printf '$ %s\\n' {shlex.quote(shown)} >> {log} && "
              f"{{ ( {command} ) 2>&1 < /dev/null; echo \"{EXIT_MARK}$?\"; }} | tee -a {log}")
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    status: list[int] = []

    async def follow() -> None:
        lines = transport.stream(script)
        try:
            async for line in lines:
                if line.startswith(EXIT_MARK):
                    status.append(int(line[len(EXIT_MARK):].strip() or 255))
                    continue
                tail.append(line)
                if line.strip() and not line.lstrip().startswith(QUIET_PREFIXES):
                    progress(host.name, f"  {line.rstrip()[:200]}")
        finally:  # on a timeout too: the command's channel is closed, the command ended
            close = getattr(lines, "aclose", None)
            if close is not None:
                await close()

    try:
        await asyncio.wait_for(follow(), timeout)
    except asyncio.TimeoutError:
        return 124, f"no end after {timeout:.0f} s: " + "\n".join(tail)[-1500:]
    return (status[-1] if status else 255), "\n".join(tail).strip()[-1500:]


async def setup_host(transport: Transport, torch_version: str, progress: Progress,
                     task_packages: tuple[str, ...] = ()) -> SetupResult:
    """Set up one host (see the module docstring)."""
    host = transport.host
    if host.container is not None:
        return await _pull_image(transport, progress)
    if host.python is not None:
        return SetupResult(host=host.name, ok=True, changed=False,
                           detail=f"nothing to change: it runs python = {host.python!r} from "
                           "cluster.toml (leave python out for corral setup to manage it)")
    sections = split_sections((await transport.run(probe_command(host), timeout=120.0)).stdout)
    if section_text(sections, "base").strip() != "True":
        why = (section_text(sections, "base").strip().splitlines() or ["did not run"])[-1]
        return SetupResult(host=host.name, ok=False, changed=False,
                           detail=f"{fallback_python(host)!r} is not Python >= 3.10 ({why}); "
                           "install one there, or set python in its [[hosts]] entry")
    wanted = wanted_for(host, torch_version, section_text(sections, "driver"), task_packages)
    recorded = last_json(section_text(sections, "state"))
    installed = _installed_torch(section_text(sections, "venv_torch"))
    allocator = section_text(sections, "allocator")
    if recorded == wanted.record() and installed == wanted.torch:
        note = await _allocator_step(transport, allocator, progress)
        return SetupResult(host=host.name, ok=True, changed=bool(note),
                           detail=f"nothing to change (torch {installed} in {venv_dir(host)})"
                           if not note else f"torch {installed} in {venv_dir(host)}; {note}")
    for number, line in enumerate(host.setup, start=1):
        status, out = await _run_logged(transport, f"sh -c {shlex.quote(line)}", line,
                                        progress, PIP_TIMEOUT_S)
        if status != 0:
            return SetupResult(host=host.name, ok=False, changed=True,
                               detail=f"setup line {number} ({line!r}) exited with status "
                               f"{status}: {out[-600:]}")
    note = await _allocator_step(transport, allocator, progress)
    result = await _make_venv(transport, wanted, progress)
    return replace(result, detail=f"{result.detail}; {note}") if note else result


async def _pull_image(transport: Transport, progress: Progress) -> SetupResult:
    """A host with a container: its image pulled (the engine's progress shown), nothing
    else; a rootfs is the host's own directory, nothing to fetch."""
    host = transport.host
    box = host.container
    assert box is not None
    if box.image is None:
        return SetupResult(host=host.name, ok=True, changed=False,
                           detail=f"nothing to change: it runs rootfs {box.rootfs}")
    status, out = await _run_logged(transport, container.pull_command(host),
                                    f"pull {box.image}", progress, PIP_TIMEOUT_S)
    if status != 0:
        return SetupResult(host=host.name, ok=False, changed=False,
                           detail=f"{box.image} could not be pulled on {host.name} (status "
                           f"{status}): {out[-400:]}; fix container.image of {host.name!r}, "
                           "or log the engine in to its registry there")
    return SetupResult(host=host.name, ok=True, changed=True, detail=f"image {box.image}")


def _announce(host: HostSection, version: str) -> str:
    """What ``corral setup`` is about to do on ``host``, said once."""
    box = host.container
    if box is None:
        return f"setting up torch {version} in {venv_dir(host)}"
    if box.image is None:
        return f"runs in a container on rootfs {box.rootfs}: nothing to set up"
    return f"pulling {box.image} with {box.engine or 'podman (or docker)'}"


async def _allocator_step(transport: Transport, found: str, progress: Progress) -> str:
    """Install tcmalloc when the host wants it and the probe ``found`` no allocator library;
    the ``allocator: ...`` outcome, or "" when there was nothing to do."""
    host = transport.host
    if not wants_install(host, found):
        return ""
    command = f"sh -c {shlex.quote(install_script(host))}"
    _, out = await _run_logged(transport, command, "install tcmalloc (faster CPU ranks)",
                               progress, PIP_TIMEOUT_S)
    return outcome(out)


async def _make_venv(transport: Transport, wanted: Wanted, progress: Progress) -> SetupResult:
    host = transport.host
    venv, python = shell_path(venv_dir(host)), shell_path(venv_python(host))
    steps = [(f"{_base_python(host)} -m venv {venv}", f"python -m venv {venv_dir(host)}")]
    index = f" --extra-index-url {shlex.quote(wanted.index)}" if wanted.index else ""
    requirements = " ".join(shlex.quote(r) for r in (f"torch=={wanted.torch}", *wanted.packages))
    steps.append((f"{python} -m pip install --disable-pip-version-check "
                  f"--progress-bar off{index} "
                  f"{requirements}", f"pip install torch=={wanted.torch} "
                  f"{' '.join(wanted.packages)}{index}"))
    record = shlex.quote(json.dumps(wanted.record()))
    steps.append((f"printf '%s\\n' {record} > {venv}/{STATE_FILE}", f"record {STATE_FILE}"))
    for command, shown in steps:
        status, out = await _run_logged(transport, command, shown, progress, PIP_TIMEOUT_S)
        if status != 0:
            return SetupResult(host=host.name, ok=False, changed=True,
                               detail=f"`{shown}` exited with status {status}: {out[-600:]}")
    build = "CPU build" if wanted.torch.endswith("+cpu") else "CUDA build"
    return SetupResult(host=host.name, ok=True, changed=True,
                       detail=f"torch {wanted.torch} ({build}) in {venv_dir(host)}")


async def setup_cluster(config: ClusterConfig, names: Sequence[str],
                        progress: Progress) -> list[SetupResult]:
    """Set up the named hosts (all when none are named), in parallel, each reported."""
    known = [h.name for h in config.hosts]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"no host {', '.join(map(repr, unknown))} in {config.path} (hosts: "
                         f"{', '.join(known)})", title="unknown host")
    chosen = [h for h in config.hosts if not names or h.name in names]
    pool = HostPool(config)
    try:
        version = await master_torch(config, pool)
        for host in chosen:
            progress(host.name, _announce(host, version))

        async def one(transport: Transport) -> SetupResult:
            return await setup_host(transport, version, progress, needed_packages(config))

        found = await pool.gather(one, hosts=[h.name for h in chosen])
    finally:
        await pool.aclose()
    return [r if isinstance(r, SetupResult) else
            SetupResult(host=name, ok=False, changed=False, detail=str(r))
            for name, r in found.items()]
