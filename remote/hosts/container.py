"""The engine command lines of a host that runs in a container (``[hosts.container]``).

One builder for podman and docker (their ``run`` has the same shape): every Python corral
starts on such a host (the check's probes, the event tailer, torchrun) runs as
``<engine> run --rm -i --network host --ipc host -e NAME.. -v DIR:DIR.. [GPUs] [options]
<image | --rootfs DIR:O> <python> ...``. The host's own shell still runs the shell-only parts
(the push's ``tar``, ``stop``'s signals and counts), on the same paths: the workdir, the run
root and the ``mounts`` are mounted at the path they have on the host.

Values of the host's ``env`` table never reach the engine's command line: the transport hands
them to the host shell on standard input (``with_host_env``) and ``-e NAME`` (a name without a
value) has the engine copy each into the container. See docs/containers.md.
"""

from __future__ import annotations

import shlex

from remote.config.cluster import HostSection
from remote.config.container import ContainerSection
from remote.hosts.transport import shell_path

RUN_LABEL = "corral.run"
"""The label (``corral.run=<run id>``) on a run's launcher container: ``stop`` and the
leftovers check find a run's containers by it."""
PROBE_LABEL = "corral.probe"
"""The label on the short-lived containers of probes and tailers."""
DEFAULT_ENGINE = '"$(command -v podman || echo docker)"'
"""The engine when cluster.toml names none: podman where the host has it (no daemon), else
docker (shell syntax, decided by the host's shell)."""
PODMAN_GPUS = ("--device", "nvidia.com/gpu=all")
"""podman passes the GPUs through CDI (the NVIDIA Container Toolkit's generated spec)."""
DOCKER_GPUS = ("--gpus", "all")
"""docker passes them through its NVIDIA runtime hook."""
CONTAINER_PREFIX = "corral-"


def container_name(run_id: str, host_name: str) -> str:
    """The name of ``host_name``'s launcher container in run ``run_id``."""
    return f"{CONTAINER_PREFIX}{run_id}-{host_name}"


def engine_word(container: ContainerSection) -> str:
    """The engine as one shell word."""
    return shlex.quote(container.engine) if container.engine else DEFAULT_ENGINE


def _by_engine(container: ContainerSection, podman: str, docker: str) -> str:
    """Shell words that differ between the engines (decided on the host when unnamed)."""
    if container.engine == "podman":
        return podman
    if container.engine == "docker":
        return docker
    return (f"$(if command -v podman >/dev/null 2>&1; then echo {shlex.quote(podman)}; "
            f"else echo {shlex.quote(docker)}; fi)")


def gpu_words(host: HostSection) -> str:
    """The flags that pass the host's GPUs in: none for ``gpus = 0``, always for a count,
    and for ``"auto"`` where the host has an NVIDIA device node."""
    assert host.container is not None
    if host.gpus == 0:
        return ""
    flags = _by_engine(host.container, shlex.join(PODMAN_GPUS), shlex.join(DOCKER_GPUS))
    return f"$([ -e /dev/nvidiactl ] && echo {flags})" if host.gpus == "auto" else flags


def user_words(container: ContainerSection) -> str:
    """docker runs the container as the host user (files in the mounts stay the user's);
    podman's rootless user namespace maps the container's root to that user already."""
    if container.engine == "podman":
        return ""
    user = '--user "$(id -u):$(id -g)"'
    return user if container.engine == "docker" else \
        f'$(command -v podman >/dev/null 2>&1 || echo {user})'


def mounted_paths(host: HostSection) -> list[str]:
    """Host directories mounted at the same path inside: workdir, run root, ``mounts``."""
    assert host.container is not None
    paths = [host.workdir, host.container.run_root, *host.container.mounts]
    return list(dict.fromkeys(p.rstrip("/") or "/" for p in paths if p))


def image_words(container: ContainerSection) -> str:
    """What the container runs: the image (never pulled here: ``corral setup`` pulls), or the
    root filesystem as an overlay (the directory itself is never written)."""
    if container.rootfs is not None:
        return f"--rootfs {shell_path(container.rootfs)}:O"
    assert container.image is not None
    return f"--pull never {shlex.quote(container.image)}"


def run_words(host: HostSection, *, name: str | None = None, run_id: str | None = None,
              here: bool = False) -> str:
    """``<engine> run ...`` up to the image: host network and IPC, the env table's names,
    ``HOME``, the mounts, the GPUs, the user's options. ``name``/``run_id``: the launcher's
    container, named and labelled; ``here``: the container starts in the shell's directory."""
    container = host.container
    assert container is not None
    paths = mounted_paths(host)
    # podman refuses a mount whose directory is missing (the workdir before the first push):
    # made first, by an empty command substitution glued to the engine word, so that the
    # whole stays one simple command wherever it stands (after a pipe too).
    made = f"$(mkdir -p {' '.join(shell_path(p) for p in paths)} >/dev/null 2>&1)"
    words = [made + engine_word(container), "run", "--rm", "-i", "--network", "host",
             "--ipc", "host"]
    if name is not None and run_id is not None:
        words += ["--name", shlex.quote(name), "--label", shlex.quote(f"{RUN_LABEL}={run_id}")]
    else:  # the tailer asks whether the launcher's process group lives: the host's PIDs
        words += ["--label", PROBE_LABEL, "--pid", "host"]
    words += ["-e", "HOME"] + [f"-e {shlex.quote(key)}" for key in sorted(host.env)]
    words += [f"-v {shell_path(p)}:{shell_path(p)}" for p in paths]
    if here:
        words.append('-w "$PWD"')
    words += [w for w in (gpu_words(host), user_words(container)) if w]
    words += [shlex.quote(option) for option in container.options]
    words.append(image_words(container))
    return " ".join(words)


def inner_python(host: HostSection) -> str:
    """The interpreter inside the container, quoted."""
    assert host.container is not None
    return shlex.quote(host.python or host.container.python)


def python_in_container(host: HostSection) -> str:
    """The host's Python as a command prefix: a fresh container running the interpreter."""
    return f"{run_words(host)} {inner_python(host)}"


def launcher_words(host: HostSection, run_id: str, inner: str) -> str:
    """The launcher's container: ``inner`` (torchrun) run by ``sh`` inside the named,
    labelled container, started in the run directory (the host's shell writes the exit file
    once the engine's client returns: ``remote.run.launch``)."""
    name = container_name(run_id, host.name)
    return f"{run_words(host, name=name, run_id=run_id, here=True)} sh -c {shlex.quote(inner)}"


CHECK_ENGINE_LIMIT_S = 8
"""How long ``corral check`` waits for the engine to say whether the image is there: a hung
engine is one row of the check within its limit, not a probe that hangs."""


def probe_command(host: HostSection) -> str:
    """Host-side shell: ``engine PATH`` (or ``engine -``), then ``image yes|no``, or ``image
    hung`` (no answer within ``CHECK_ENGINE_LIMIT_S``) or ``image daemon`` and ``said LINE``
    (the engine cannot reach its daemon). Unless the answer is yes or no, it sets
    ``corral_engine_down`` for the probe script (``remote.checks.preflight``)."""
    container = host.container
    assert container is not None
    engine = engine_word(container)
    if container.rootfs is not None:
        return (f'e=$(command -v {engine} 2>/dev/null) || e=-; echo "engine $e"; '
                f'if [ "$e" != - ] && [ -d {shell_path(container.rootfs)} ]; then '
                'echo "image yes"; else echo "image no"; fi')
    limit = (f'$(command -v timeout >/dev/null 2>&1 && echo "timeout {CHECK_ENGINE_LIMIT_S}")')
    inspect = f"{limit} {engine} image inspect {shlex.quote(container.image or '')}"
    return (f'e=$(command -v {engine} 2>/dev/null) || e=-; echo "engine $e"; '
            'if [ "$e" = - ]; then echo "image no"; '
            f'elif o=$({inspect} 2>&1 >/dev/null); then echo "image yes"; '
            'elif [ $? = 124 ]; then echo "image hung"; corral_engine_down=1; '
            'elif printf "%s" "$o" | grep -qi "daemon\\|cannot connect"; then '
            'echo "image daemon"; printf "said %s\\n" "$(printf "%s" "$o" | head -n 1)"; '
            'corral_engine_down=1; else echo "image no"; fi')


def pull_command(host: HostSection) -> str:
    """``<engine> pull IMAGE`` (its progress is what ``corral setup`` shows)."""
    assert host.container is not None and host.container.image is not None
    return f"{engine_word(host.container)} pull {shlex.quote(host.container.image)}"


ENGINE_LIMIT_S = 20
"""How long a stop waits for each engine command (``ps``, ``rm``): a hung engine makes the
stop say it could not verify, instead of hanging it."""


def _bounded(words: str) -> str:
    """``words`` (an engine command) ended after ``ENGINE_LIMIT_S`` where ``timeout`` exists."""
    return (f'$(command -v timeout >/dev/null 2>&1 && echo "timeout {ENGINE_LIMIT_S}") '
            + words)


def remove_command(host: HostSection, run_id: str) -> str:
    """Remove the run's containers on the host (stopped or not), quietly, bounded in time."""
    assert host.container is not None
    engine = engine_word(host.container)
    label = shlex.quote(f"{RUN_LABEL}={run_id}")
    return (f"{_bounded(f'{engine} rm -f')} $({_bounded(f'{engine} ps -a -q')} --filter "
            f"label={label} 2>/dev/null) >/dev/null 2>&1 || true")


def count_command(host: HostSection, run_id: str) -> str:
    """Print how many containers of the run the host has (running or not), by the engine's
    own state; ``?`` when the engine does not answer (failed, hung past its limit)."""
    assert host.container is not None
    listing = (f"{_bounded(engine_word(host.container) + ' ps -a -q')} --filter "
               f"label={shlex.quote(f'{RUN_LABEL}={run_id}')} 2>/dev/null")
    return (f"if n=$({listing}); then printf '%s\\n' \"$n\" | grep -c .; "
            "else echo '?'; fi")


def names_command(host: HostSection) -> str:
    """Print the names of the host's run containers (``corral-<run id>-<host>``), one a line."""
    assert host.container is not None
    return (f"{engine_word(host.container)} ps -a --filter label={RUN_LABEL} "
            "--format '{{.Names}}' 2>/dev/null")


def runs_of_names(output: str, host_name: str) -> list[str]:
    """The run ids in ``names_command``'s output for ``host_name``."""
    suffix = f"-{host_name}"
    return sorted({name[len(CONTAINER_PREFIX):-len(suffix)] for name in output.split()
                   if name.startswith(CONTAINER_PREFIX) and name.endswith(suffix)
                   and len(name) > len(CONTAINER_PREFIX) + len(suffix)})
