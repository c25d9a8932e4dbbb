"""cluster.toml: the one file a user writes. Parsed once into frozen dataclasses.

CONTRACT (shared by remote, console and their tests): the dataclass and field names below
(``[kubernetes]``, ``[tracking]`` and ``[notify]``: ``remote/config/exports.py``).
``load_cluster(path)`` / ``parse_cluster(text, path=...)`` read a file strictly: every problem
in it is collected and raised together as one ``ConfigError`` (a ``UsageError``, exit code 2),
each naming the file, the section and the key. The value rules live in ``remote.config.rules``
and run both here and in each dataclass's ``__post_init__``, so a config built in code obeys
them too.
``docs/cluster-toml.md`` is generated from these classes (``python -m remote.config.doc``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from remote.config import rules
from remote.config.container import ContainerSection, bind_run_root
from remote.config.errors import ConfigError, ConfigProblem, check_section, host_where
from remote.config.exports import KubernetesSection, NotifySection, TrackingSection
from remote.config.ranges import MAX_COUNT, MAX_RANKS_PER_HOST
from remote.config.task_code import task_problems
from remote.config.value_rules import key, key_problems, section_values
from trainer.placement import Allocator
from trainer.settings.run_settings import Policy, RunSettings

__all__ = [
    "ClusterConfig", "ClusterSection", "ConfigError", "ConfigProblem", "ContainerSection",
    "HostSection", "RunSection", "SshSection",
]
"""Reading a cluster.toml into these (``load_cluster``, ``parse_cluster``) is
``remote/config/read.py``'s."""


@dataclass(frozen=True, kw_only=True)
class ClusterSection:
    """``[cluster]``: the cluster as a whole."""

    name: str = field(metadata=key(name=True))
    """Shown in the console header and used in run ids: letters, digits, ``.``, ``_``, ``-``."""
    master: str | None = field(default=None, metadata=key(text=True))
    """Name of the ``[[hosts]]`` entry that hosts torch's rendezvous store; default: the first
    ``[[hosts]]`` entry."""
    rendezvous_port: int | Literal["auto"] = field(default="auto", metadata=key(port=True))
    """TCP port for torch's rendezvous store on the master; ``"auto"`` picks a free one."""
    master_addr: str | None = field(default=None, metadata=key(token=True, address=True))
    """Address the workers use to reach the master; default: the master's HostName after
    ssh_config resolution (``127.0.0.1`` for a ``local`` master)."""
    run_root: str = field(default="~/.corral/runs", metadata=key(text=True))
    """Directory on every host (and locally) under which each run gets ``<run_root>/<run_id>``."""

    def __post_init__(self) -> None:
        check_section("[cluster] ", key_problems(ClusterSection, section_values(self)))


@dataclass(frozen=True, kw_only=True)
class HostSection:
    """One ``[[hosts]]`` entry: a machine (or, with ``address = "local"``, this machine)."""

    name: str = field(metadata=key(name=True))
    """Unique name used in the console, logs and ``[cluster] master``: letters, digits,
    ``.``, ``_``, ``-``."""
    address: str = field(metadata=key(token=True, address=True))
    """An ssh_config alias, hostname or IP, or ``"local"`` for this machine without SSH."""
    user: str | None = field(default=None, metadata=key(token=True, ssh_only=True))
    """SSH user; default from ssh_config, else the local user."""
    port: int | None = field(default=None, metadata=key(port=True, ssh_only=True))
    """SSH port; default from ssh_config, else 22."""
    identity_file: str | None = field(default=None, metadata=key(text=True, ssh_only=True))
    """Private key file; default from ssh_config and the ssh agent. ``~`` is expanded and a
    relative path is taken from the directory of cluster.toml; the file must be readable."""
    python: str | None = field(default=None, metadata=key(text=True))
    """Python interpreter on the host (with torch installed); default: the environment
    ``corral setup`` made (``<workdir>/venv``) when there is one, else the interpreter running
    corral on a ``local`` host and ``python3`` on an SSH host."""
    workdir: str = field(default="~/.corral", metadata=key(text=True))
    """Where pushed code lives on the host (``<workdir>/code/<hash>``)."""
    gpus: int | Literal["auto"] = field(
        default="auto", metadata=key(at_least=0, at_most=MAX_RANKS_PER_HOST))
    """How many GPUs to use; ``"auto"`` uses every GPU torch sees there."""
    nproc: int | None = field(default=None,
                              metadata=key(at_least=1, at_most=MAX_RANKS_PER_HOST))
    """Ranks on this host; default: the GPU count, or 1 on a CPU-only host."""
    threads: int | None = field(default=None, metadata=key(at_least=1, at_most=65536))
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
    slowdown: float = field(default=1.0, metadata=key(at_least=1.0, at_most=1e6))
    """Emulate a device this many times slower (for demos and tests); 1.0 = real speed."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables for the launcher and ranks on this host."""
    interface: str | None = None
    """Network interface for Gloo/NCCL (``GLOO_SOCKET_IFNAME``); default: detected."""
    link_gbit: float | None = field(default=None, metadata=key(above=0.0, at_most=1e6))
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
    micro_batch: int | None = field(default=None, metadata=key(at_least=1, at_most=MAX_COUNT))
    """Largest forward/backward pass of this host's ranks; default ``[run] micro_batch``."""
    state_budget: float | None = field(default=None, metadata=key(above=0.0, at_most=1e6))
    """Memory in GiB each of this host's ranks may give to training state; default measured
    (a GPU's free memory, a CPU rank's share of the host's available memory, within its
    cgroup's limit). ``[run] shard_state`` sizes each rank's slice by the ranks' ratio, and
    ``corral check`` refuses a run whose state exceeds a rank's budget (docs/trainer.md
    "Sharded state")."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """``corral export k8s``: node labels the host's pods must run on (e.g. the GPU product
    label ``nvidia.com/gpu.product``); hosts with different selectors are different kinds."""
    image: str | None = field(default=None, metadata=key(token=True))
    """``corral export k8s``: the container image of this host's pods; default its
    ``container.image``, else ``[kubernetes] image``."""
    container: ContainerSection | None = None
    """``[hosts.container]``: run the host's part of a run in a container (below)."""

    def __post_init__(self) -> None:
        check_section(f"{host_where(None, self.name)}.", rules.host_problems(HostSection,
                                                                      section_values(self)))

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

    name: str | None = field(default=None, metadata=key(rule=rules.run_name_problem))
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
    data: bool | tuple[str, ...] = True
    """Your script's data (docs/data.md): ``true`` sends what the launch folder holds that is
    data (``data/``, ``datasets/``, ``*.bin``, ``*.npy``, ``*.txt``... even when .gitignore hides
    it) by the data sync, cached on each host; a list also names paths: one inside the folder
    (a symlink to a dataset elsewhere) is sent too, its target's files under the link's name;
    one outside it (``/mnt/datasets/x``) is a path the hosts already have, checked on every
    host before launch; ``false`` sends no data."""
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
    micro_batch: int | None = field(default=None, metadata=key(at_least=1))
    """Largest forward/backward pass per rank (more passes, one all-reduce); not set: one."""
    hang_factor: float = field(default=20.0, metadata=key(at_least=1.0, at_most=1e6))
    """A rank without a step for this many times its usual step time (and at least 10 s) is
    reported, with what its process is doing (stopped, blocked, gone, busy, waiting)."""
    max_restarts: int = field(default=0, metadata=key(at_least=0, at_most=10**6))
    """When a rank fails after the run started (killed, crashed, its host dropped, hung),
    stop the rest and launch the run again from its newest good checkpoint, up to this many
    times. The data order and random state continue exactly, so the result is the same."""
    on_host_loss: rules.HostLoss = "stop"
    """A host lost during the run (unreachable past ``[ssh] lost_after``, or its ranks failing
    two attempts in a row under ``max_restarts``): ``stop`` fails the run; ``continue`` goes on
    without it, the same global batch re-split among the others (the result is the same, only
    slower): a ``task`` run's survivors leave it behind in their own processes (live
    membership, below), else the run restarts on the others from its newest checkpoint."""
    live_membership: bool = True
    """Hosts join and leave the running run at step boundaries, in the same processes and with
    the same result (``corral leave``, ``corral join``, the console's ``e`` and ``j``), and a
    host lost under ``on_host_loss = "continue"`` is left behind by the survivors instead of a
    restart. On by default, with nothing written; ``false`` is the way out (a leave or join is
    refused, a lost host restarts the run from its newest checkpoint). corral's own loop only:
    a script run as is, ``exchange = "local"`` with ``outer_overlap``, and a sharded
    ``shard_state``, restart whatever it says (docs/reliability.md, "Live membership")."""
    hang_limit: float = field(default=300.0, metadata=key(at_least=0.0, at_most=10**7))
    """Seconds without a step after which corral stops the run, naming the rank that holds
    the others up (0 = wait for torch's own timeout)."""
    keys_set: frozenset[str] = field(default=frozenset(), init=False, repr=False,
                                     compare=False)
    """Not a key: the keys cluster.toml's ``[run]`` wrote (set by its reader; empty for a
    section built in code), so that what a script ignores is named as written."""

    def __post_init__(self) -> None:
        check_section("[run] ", rules.run_problems(RunSection, section_values(self)))
        if self.steps is None and self.epochs is None:
            # Written out so every reader (flags, console, reports) sees the same length.
            object.__setattr__(self, "epochs", 1)


@dataclass(frozen=True, kw_only=True)
class SshSection:
    """``[ssh]``: how corral connects."""

    connect_timeout: float = field(default=10.0, metadata=key(above=0.0, at_most=86400))
    """Seconds before an unreachable host is reported as such."""
    keepalive: float = field(default=15.0, metadata=key(at_least=0.0, at_most=86400))
    """Seconds between keepalives on each connection (0 disables)."""
    lost_after: float = field(default=60.0, metadata=key(at_least=0.0, at_most=10**7))
    """Seconds a host of a running run may stay unreachable (its connection is re-opened
    with backoff meanwhile) before it counts as lost and the run fails without it."""
    known_hosts: rules.KnownHosts = "strict"
    """``strict`` verifies host keys against ~/.ssh/known_hosts (and ``corral trust``);
    ``insecure`` skips verification and prints a warning."""
    max_parallel_connects: int = field(default=8, metadata=key(at_least=1, at_most=1024))
    """Connects in flight at once (sshd's MaxStartups drops bursts)."""
    known_hosts_file: str = field(default="~/.ssh/known_hosts", metadata=key(text=True))
    """The known_hosts file host keys are verified against (and ``corral trust`` adds to)."""
    config_file: str = field(default="~/.ssh/config", metadata=key(text=True))
    """The OpenSSH client config read for aliases, User, Port, IdentityFile and ProxyJump
    (ignored when the file does not exist)."""

    def __post_init__(self) -> None:
        check_section("[ssh] ", key_problems(SshSection, section_values(self)))


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
    notify: NotifySection = field(default_factory=NotifySection)
    """``[notify]``."""
    launch_dir: str = ""
    """Not a section: for ``corral run --script`` started from a folder inside the code folder
    (``--code``), that folder relative to the code folder (POSIX; "" = the code folder), where
    each rank's working directory is, as torchrun's would be (``remote.api.with_script``)."""

    def __post_init__(self) -> None:
        problems = rules.cross_problems(
            section_values(self.cluster), [section_values(h) for h in self.hosts],
            section_values(self.run))
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
    "notify": NotifySection,
}
"""Top-level keys of cluster.toml and the dataclass each one fills."""
HEADERS = {"cluster": "[cluster]", "hosts": "[[hosts]]", "run": "[run]", "ssh": "[ssh]",
           "kubernetes": "[kubernetes]", "tracking": "[tracking]",
           "notify": "[notify]"}
