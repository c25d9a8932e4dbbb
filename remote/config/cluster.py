"""cluster.toml: the one file a user writes. Parsed once into frozen dataclasses.

CONTRACT (shared by remote, console and their tests): the dataclass and field names below.
``load_cluster(path)`` / ``parse_cluster(text, path=...)`` read a file strictly: every problem
in it is collected and raised together as one ``ConfigError`` (a ``UsageError``, exit code 2),
each naming the file, the section and the key. The value rules live in ``remote.config.rules``
and run both here and in each dataclass's ``__post_init__``, so a config built in code obeys
them too.
``docs/cluster-toml.md`` is generated from these classes (``python -m remote.config.doc``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from remote.config import rules
from remote.config.container import ContainerSection, bind_run_root
from remote.config.errors import (
    ConfigError,
    ConfigProblem,
    host_where,
)
from remote.config.task_code import task_problems
from remote.config.tracking_rules import tracking_problems
from trainer.placement import Allocator
from trainer.settings.run_settings import Policy, RunSettings

__all__ = [
    "ClusterConfig", "ClusterSection", "ConfigError", "ConfigProblem", "ContainerSection",
    "HostSection", "KubernetesSection", "RunSection", "SshSection",
]
"""Reading a cluster.toml into these (``load_cluster``, ``parse_cluster``) is
``remote/config/read.py``'s."""


def _check(section: str, problems: list[tuple[str, str]]) -> None:
    """Raise the problems a dataclass found in its own values (a config built in code)."""
    if problems:
        raise ConfigError([ConfigProblem(path=None, where=f"{section}{key}", message=msg)
                           for key, msg in problems])


def _values(obj: object) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class ClusterSection:
    """``[cluster]``: the cluster as a whole."""

    name: str
    """Shown in the console header and used in run ids: letters, digits, ``.``, ``_``, ``-``."""
    master: str | None = None
    """Name of the ``[[hosts]]`` entry that hosts torch's c10d rendezvous; default: the first
    ``[[hosts]]`` entry."""
    rendezvous_port: int | Literal["auto"] = "auto"
    """TCP port for torch's c10d rendezvous on the master; ``"auto"`` picks a free one."""
    master_addr: str | None = None
    """Address the workers use to reach the master; default: the master's HostName after
    ssh_config resolution (``127.0.0.1`` for a ``local`` master)."""
    run_root: str = "~/.corral/runs"
    """Directory on every host (and locally) under which each run gets ``<run_root>/<run_id>``."""

    def __post_init__(self) -> None:
        _check("[cluster] ", rules.cluster_problems(_values(self)))


@dataclass(frozen=True, kw_only=True)
class HostSection:
    """One ``[[hosts]]`` entry: a machine (or, with ``address = "local"``, this machine)."""

    name: str
    """Unique name used in the console, logs and ``[cluster] master``: letters, digits,
    ``.``, ``_``, ``-``."""
    address: str
    """An ssh_config alias, hostname or IP, or ``"local"`` for this machine without SSH."""
    user: str | None = None
    """SSH user; default from ssh_config, else the local user."""
    port: int | None = None
    """SSH port; default from ssh_config, else 22."""
    identity_file: str | None = None
    """Private key file; default from ssh_config and the ssh agent. ``~`` is expanded and a
    relative path is taken from the directory of cluster.toml; the file must be readable."""
    python: str | None = None
    """Python interpreter on the host (with torch installed); default: the environment
    ``corral setup`` made (``<workdir>/venv``) when there is one, else the interpreter running
    corral on a ``local`` host and ``python3`` on an SSH host."""
    workdir: str = "~/.corral"
    """Where pushed code lives on the host (``<workdir>/code/<hash>``)."""
    gpus: int | Literal["auto"] = "auto"
    """How many GPUs to use; ``"auto"`` uses every GPU torch sees there."""
    nproc: int | None = None
    """Ranks on this host; default: the GPU count, or 1 on a CPU-only host."""
    threads: int | None = None
    """CPU threads per rank (the trainer's ``--threads``); default: one per core of the
    rank's share of the host (see ``pin_cores``)."""
    pin_cores: bool = True
    """Give the host's ranks disjoint cores, as many threads as cores each (GPU ranks: the
    cores near their GPU); hosts on one machine share its cores out first. With more ranks
    than cores nothing is pinned. ``false`` leaves placement to the kernel."""
    cores: str | None = None
    """The cores corral may use on the host, as a list like ``"0-7,16"``; default: all it
    may run on (keep some free for other work on a desktop)."""
    allocator: Allocator = "auto"
    """Memory allocator of the host's ranks: ``auto`` preloads tcmalloc, else jemalloc, when
    the host has one (``corral check`` says which), else tunes glibc to keep freed memory;
    ``off`` leaves glibc's defaults (slower CPU ranks)."""
    slowdown: float = 1.0
    """Emulate a device this many times slower (for demos and tests); 1.0 = real speed."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for the launcher and ranks on this host."""
    interface: str | None = None
    """Network interface for Gloo/NCCL (``GLOO_SOCKET_IFNAME``); default: detected."""
    link_gbit: float | None = None
    """Speed of the host's link to the others in Gbit/s, for the pre-run estimate of which
    hosts pay for their gradient exchange (``corral check``), where the check's full-mesh test
    could not measure it; default: what its interface shows. Give it where the interface shows
    none: Wi-Fi, a virtual link, hosts that share one machine (loopback)."""
    setup: tuple[str, ...] = ()
    """Shell lines ``corral setup`` runs on the host first, in order, before it makes the
    virtual environment (e.g. installing a system package); each is logged, and a failing line
    is named with its host."""

    torch_index: str = "https://download.pytorch.org/whl/{flavour}"
    """The package index ``corral setup`` installs torch from, ``{flavour}`` replaced by
    ``cpu`` or the CUDA flavour the host's driver runs (e.g. ``cu126``); ``""`` leaves it to
    the host's own pip configuration."""
    micro_batch: int | None = None
    """Largest forward/backward pass of this host's ranks; default ``[run] micro_batch``."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """``corral export k8s``: node labels the host's pods must run on (e.g. the GPU product
    label ``nvidia.com/gpu.product``); hosts with different selectors are different kinds."""
    image: str | None = None
    """``corral export k8s``: the container image of this host's pods; default its
    ``container.image``, else ``[kubernetes] image``."""
    container: ContainerSection | None = None
    """``[hosts.container]``: run the host's part of a run in a container (below)."""

    def __post_init__(self) -> None:
        _check(f"{host_where(None, self.name)}.", rules.host_problems(_values(self)))

    @property
    def is_local(self) -> bool:
        """True for ``address = "local"`` (run here without SSH)."""
        return self.address == "local"

    @property
    def known_nproc(self) -> int | None:
        """Ranks on this host when known without contacting it: ``nproc``, else ``gpus``
        when it is a number (1 for ``gpus = 0``); None for ``gpus = "auto"``."""
        return rules.resolved_nproc(self.nproc, self.gpus)


@dataclass(frozen=True, kw_only=True)
class RunSection(RunSettings):
    """``[run]``: the run's name and the trainer's settings (each a ``python -m trainer`` flag).

    The keys it shares with the trainer (their meanings, defaults, choices and bounds) are
    ``trainer.settings.run_settings.RunSettings``'s fields; the ones below are corral's own,
    or written differently in cluster.toml than on the trainer's command line."""

    name: str | None = None
    """The runs' name (``corral run --name`` overrides it), shown with their unique run id."""
    task_options: dict[str, Any] = field(default_factory=dict)
    """``[run.task_options]``: options of the causal_lm or user task (``build(options)``)."""
    code: str | None = None
    """Folder pushed with the trainer for a user task or script (relative to cluster.toml).
    Default for a script: the folder of cluster.toml when it holds the script (the folder you
    launch from, as with torchrun; it is each host's working directory of the run), else the
    script's folder; for a task: the task file's folder."""
    script: str | None = None
    """Your own training script (relative to cluster.toml), run as is by torchrun on every
    host instead of corral's trainer; leave ``task`` out (docs/scripts.md)."""
    args: tuple[str, ...] = ()
    """The script's command-line arguments, one string each (no shell: corral quotes them)."""
    imports_check: rules.ImportsCheck = "block"
    """What a module the script (or a module of its own tree) imports unconditionally but a
    host's Python cannot find does: ``block`` the launch, or only ``warn``. An import under
    ``try``/``except ImportError``, behind a condition or inside a function is reported as
    optional and never blocks."""
    policy: Policy = "dynamic"
    """How the split is chosen and changed: kept (``static``), proportional to measured
    capacity, or re-solved during the run (``dynamic``, the default here: balancing unequal
    machines is what corral is for; a bare ``python -m trainer`` keeps its ``--split``)."""
    micro_batch: int | None = None
    """Largest forward/backward pass per rank (more passes, one all-reduce); not set: one."""
    hang_factor: float = 20.0
    """A rank without a step for this many times its usual step time (and at least 10 s) is
    reported, with what its process is doing (stopped, blocked, gone, busy, waiting)."""
    max_restarts: int = 0
    """When a rank fails after the run started (killed, crashed, its host dropped, hung),
    stop the rest and launch the run again from its newest good checkpoint, up to this many
    times. The data order and random state continue exactly, so the result is the same."""
    on_host_loss: rules.HostLoss = "stop"
    """A host lost during the run (unreachable past ``[ssh] lost_after``, or its ranks failing
    two attempts in a row under ``max_restarts``): ``stop`` fails the run; ``continue`` drops
    the host and restarts from the newest checkpoint on the others,
    the same global batch re-split among them (the result is the same, only slower)."""
    hang_limit: float = 300.0
    """Seconds without a step after which corral stops the run, naming the rank that holds
    the others up (0 = wait for torch's own timeout)."""
    keys_set: frozenset[str] = field(default=frozenset(), init=False, repr=False,
                                     compare=False)
    """Not a key: the keys cluster.toml's ``[run]`` wrote (set by its reader; empty for a
    section built in code), so that what a script ignores is named as written."""

    def __post_init__(self) -> None:
        _check("[run] ", rules.run_problems(_values(self)))
        if self.steps is None and self.epochs is None:
            # Written out so every reader (flags, console, reports) sees the same length.
            object.__setattr__(self, "epochs", 1)


@dataclass(frozen=True, kw_only=True)
class SshSection:
    """``[ssh]``: how corral connects."""

    connect_timeout: float = 10.0
    """Seconds before an unreachable host is reported as such."""
    keepalive: float = 15.0
    """Seconds between keepalives on each connection (0 disables)."""
    lost_after: float = 60.0
    """Seconds a host of a running run may stay unreachable (its connection is re-opened
    with backoff meanwhile) before it counts as lost and the run fails without it."""
    known_hosts: rules.KnownHosts = "strict"
    """``strict`` verifies host keys against ~/.ssh/known_hosts (and ``corral trust``);
    ``insecure`` skips verification and prints a warning."""
    max_parallel_connects: int = 8
    """Connects in flight at once (sshd's MaxStartups drops bursts)."""
    known_hosts_file: str = "~/.ssh/known_hosts"
    """The known_hosts file host keys are verified against (and ``corral trust`` adds to)."""
    config_file: str = "~/.ssh/config"
    """The OpenSSH client config read for aliases, User, Port, IdentityFile and ProxyJump
    (ignored when the file does not exist)."""

    def __post_init__(self) -> None:
        _check("[ssh] ", rules.ssh_problems(_values(self)))


@dataclass(frozen=True, kw_only=True)
class KubernetesSection:
    """``[kubernetes]``: how ``corral export k8s`` writes the run as Kubernetes manifests
    (see docs/kubernetes.md); every name is a Kubernetes name (lower-case letters, digits,
    ``-``)."""

    namespace: str = "default"
    """Namespace of every object written."""
    image: str | None = None
    """Container image of the pods: Python with torch and the task's packages (corral's own
    code travels in a ConfigMap); needed unless every host sets its own ``image``."""
    job_name: str | None = None
    """Name of the job and prefix of its other objects; default: ``[cluster] name``."""
    runs_pvc: str = "corral-runs"
    """PersistentVolumeClaim holding the run directories, mounted in every pod."""
    runs_pvc_size: str = "20Gi"
    """Storage requested by the run-directory claim (when ``create_pvc``)."""
    create_pvc: bool = True
    """Write the run-directory claim with the job; ``false`` uses an existing ``runs_pvc``."""
    storage_class: str | None = None
    """StorageClass of the run-directory claim (ReadWriteMany when pods share it across
    nodes); default: the cluster's default class."""
    data_pvc: str | None = None
    """An existing claim with data or model files, mounted read-only at ``/corral/data``."""
    service_account: str | None = None
    """Service account the pods run as; default: the namespace's default account."""
    image_pull_secret: str | None = None
    """Secret with the registry credentials for a private ``image``."""

    def __post_init__(self) -> None:
        _check("[kubernetes] ", rules.kubernetes_problems(_values(self)))


@dataclass(frozen=True, kw_only=True)
class TrackingSection:
    """``[tracking]``: the experiment trackers a run is logged to while corral follows it,
    from this machine's copy of its events (see docs/tracking.md); none by default."""

    mlflow: str | None = None
    """MLflow tracking URI: ``sqlite:///PATH`` (needs the ``mlflow`` extra), a directory, or
    ``http(s)://HOST:PORT`` of a tracking server."""
    experiment: str | None = None
    """MLflow experiment (Aim experiment) the runs go in; default: ``[cluster] name``."""
    aim: str | None = None
    """Path of an Aim repository (needs the ``aim`` extra, Python <= 3.12)."""
    log_model: bool = True
    """Log the final model as an artifact when it is on this machine."""

    def __post_init__(self) -> None:
        _check("[tracking] ", tracking_problems(_values(self)))

    @property
    def enabled(self) -> bool:
        """True when some tracker is configured."""
        return bool(self.mlflow or self.aim)


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """A whole cluster.toml."""

    path: Path
    """The file it was read from (named in every error)."""
    cluster: ClusterSection
    """``[cluster]``."""
    hosts: tuple[HostSection, ...]
    """``[[hosts]]``, in the order written."""
    run: RunSection = field(default_factory=RunSection)
    """``[run]``."""
    ssh: SshSection = field(default_factory=SshSection)
    """``[ssh]``."""
    kubernetes: KubernetesSection = field(default_factory=KubernetesSection)
    """``[kubernetes]``."""
    tracking: TrackingSection = field(default_factory=TrackingSection)
    """``[tracking]``."""
    launch_dir: str = ""
    """Not a section: for ``corral run --script`` started from a folder inside the code folder
    (``--code``), that folder relative to the code folder (POSIX; "" = the code folder), where
    each rank's working directory is, as torchrun's would be (``remote.api.with_script``)."""

    def __post_init__(self) -> None:
        problems = rules.cross_problems(
            _values(self.cluster), [_values(h) for h in self.hosts], _values(self.run))
        if not self.hosts:
            problems.insert(0, ("[[hosts]]", "no hosts; add at least one [[hosts]] entry"))
        code_problems = task_problems(self.run, self.path.parent)
        file_error = code_problems[0].file_error if code_problems else None
        if file_error is not None and not problems:
            # only the user's own file is at fault: the error is headed by its name
            problem = code_problems[0]
            raise ConfigError([ConfigProblem(path=self.path if problem.where else None,
                                             where=problem.where, message=problem.message)],
                              title=file_error.title)
        problems += [(p.where, p.message) for p in code_problems]
        if problems:
            raise ConfigError([ConfigProblem(path=self.path if where else None, where=where,
                                             message=msg) for where, msg in problems],
                              title=f"{self.path.name} is invalid")
        bind_run_root([h.container for h in self.hosts], self.cluster.run_root)
        if self.cluster.master is None:  # one obvious choice: the first host
            object.__setattr__(self, "cluster", replace(self.cluster, master=self.hosts[0].name))

    @property
    def master_name(self) -> str:
        """The name of the master host (``[cluster] master``, default the first host)."""
        return self.master_host.name

    @property
    def master_host(self) -> HostSection:
        """The ``[[hosts]]`` entry named by ``[cluster] master`` (default: the first one)."""
        return next((h for h in self.hosts if h.name == self.cluster.master), self.hosts[0])

    @property
    def world_size_hint(self) -> int | None:
        """Total ranks when every host's count is known without contacting it (see
        ``HostSection.known_nproc``); None when some host has ``gpus = "auto"`` and no
        ``nproc``."""
        counts = [h.known_nproc for h in self.hosts]
        return None if None in counts else sum(c for c in counts if c is not None)


# ---------------------------------------------------------------------------------------------
# Reading a file: TOML -> typed values -> rules -> dataclasses. Nothing is built until every
# problem in the file has been collected.

SECTIONS: dict[str, type] = {
    "cluster": ClusterSection, "hosts": HostSection, "run": RunSection, "ssh": SshSection,
    "kubernetes": KubernetesSection, "tracking": TrackingSection,
}
"""Top-level keys of cluster.toml and the dataclass each one fills."""
HEADERS = {"cluster": "[cluster]", "hosts": "[[hosts]]", "run": "[run]", "ssh": "[ssh]",
           "kubernetes": "[kubernetes]", "tracking": "[tracking]"}
