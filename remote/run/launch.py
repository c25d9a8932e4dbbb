"""Start torch's launcher on every host of a run.

On each host corral starts torch's launcher (torchrun, through ``python -m trainer.launcher``,
which ends without a traceback when stopped) with torch's static rendezvous at ``master:port``
(``torch_node_rank``) and the run id as rendezvous id, in its own session and process group
(``setsid``), stdin from /dev/null, output appended to ``<run dir>/logs/<host>/launcher.log``.
The process-group id goes to ``<run dir>/hosts/<host>.pgid`` and its leader's start time (field 22
of ``/proc/<pid>/stat``, what makes a process id unique over time) to ``hosts/<host>.leader``, so
``corral stop`` can tell the launcher from a stranger that got the same id later; when the
launcher exits by itself its exit status goes to ``<run dir>/hosts/<host>.exit``. Ranks inherit
the variables named in ``trainer.launch_contract`` — the host's name, the run id, their first
global rank (ranks are numbered in host order, see ``remote.checks.plan``) — and, where
cluster.toml pins the GPUs, ``CUDA_VISIBLE_DEVICES``; the host's planned ranks go to ``<run
dir>/hosts/<host>.planned`` for the event tailer, which tells the ranks of hosts that share one
machine apart by it.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass, fields
from typing import cast

from profiles.user_errors import CorralError
from remote.checks.plan import HostPlan
from remote.checks.run_root import free_kib_command
from remote.config.cluster import ClusterConfig, HostSection, RunSection
from remote.config.task_code import USER_CODE_DIR, UserCode, option_pairs
from remote.hosts.command_errors import RemoteCommandError
from remote.hosts.container import inner_python, launcher_words, remove_command
from remote.hosts.interpreter import python_word
from remote.hosts.push import code_dir
from remote.hosts.transport import Transport, env_prefix, shell_path
from remote.records.disk_full import disk_full
from remote.run.seed_cwd import seed_words
from remote.run.tail_script import JOIN_MARK
from trainer.integrations.contract import RUN_DIR_ENV, ScriptSettings
from trainer.launch_contract import (
    HOST_ENV,
    LOG_LINE_PREFIX_ENV,
    RANK_BASE_ENV,
    RUN_ID_ENV,
    log_line_prefix,
)
from trainer.membership.contract import (
    HOST_LOSS_ENV,
    JOIN_ENV,
    MEMBERSHIP_ADDR_ENV,
    MEMBERSHIP_PORT_ENV,
)
from trainer.membership.join_cost import JOIN_PHASES_ENV
from trainer.run_layout import IN_RUN_DIR, RunLayout
from trainer.settings.flags import flag_words
from trainer.settings.run_settings import Policy, RunSettings
from trainer.settings.train_config import BUILTIN_TASKS, TrainConfig

SCRIPT_MAIN = "trainer.integrations.script_main"
"""The module torchrun starts for a user's script (it then runs the script as ``__main__``)."""
TORCHRUN_MODULE = "trainer.launcher"
"""torch's launcher behind corral's entry point, which ends without a traceback when stopped."""

RDZV_JOIN_TIMEOUT_S = 120
"""Seconds torchrun waits for every host to join the rendezvous before it gives up."""


@dataclass(frozen=True, kw_only=True)
class LaunchPlan:
    """What every host of one launch shares."""

    run_id: str
    run_dir: str
    """``<run_root>/<run_id>`` as the hosts' shells see it (a leading ``~`` is kept)."""
    code_digest: str
    master_addr: str
    port: int
    nnodes: int
    user: UserCode | None
    """The run's user code, located once for the launch (``remote.config.task_code.user_code``:
    the script or task file and the folder pushed with it); None for a built-in task."""
    resume: bool = False
    policy: str | None = None  # overrides [run] policy for this launch
    backend: str = "gloo"  # every rank's process-group backend (remote.checks.plan decides)
    restart: int = 0
    """Restarts of the run so far (``max_restarts``): a script is told (``CORRAL_RESTART``)."""
    membership_port: int | None = None
    """The run's membership port on the master (``CORRAL_MEMBERSHIP_PORT``, a ``task`` run
    only: ``remote.checks.membership_port``); None: no live join or leave."""
    join_generation: int | None = None
    """A host joining the running run (``corral join``): the membership generation its ranks
    are launched against (``CORRAL_JOIN``); None for a launch of the run."""
    join_phases: str = ""
    """A joiner's check and push, seconds as JSON (``trainer.membership.join_cost``)."""


def trainer_flags(run: RunSection, place: HostPlan, plan: LaunchPlan) -> list[str]:
    """``python -m trainer`` arguments, unquoted, generated from the trainer's fields: every
    setting ``[run]`` shares with the trainer (``RunSettings``), then what the host and this
    launch decide. ``--run-dir`` and a user task's ``--task`` are added by
    ``launcher_command``: they are shell syntax."""
    host = place.host
    values = {f.name: getattr(run, f.name) for f in fields(RunSettings)}
    if run.task not in BUILTIN_TASKS:  # a user task's --task is a path (launcher_command)
        del values["task"]
    micro = host.micro_batch if host.micro_batch is not None else run.micro_batch
    del values["backend"]  # the plan decides it, for every host alike; written by the device
    values.update(policy=plan.policy or run.policy, backend=plan.backend, device=place.device,
                  slowdown=(host.slowdown,), threads=_threads(place),
                  link_mbit=place.link_mbit,
                  micro_batch=None if micro is None else (micro,),
                  state_budget=None if host.state_budget is None else (host.state_budget,),
                  task_options=option_pairs(run.task_options), resume=plan.resume)
    if run.precision == "auto":  # decided per host by the plan (remote.checks.plan)
        values["precision"] = place.precision
    return flag_words(values, TrainConfig)


def launcher_command(config: ClusterConfig, plan: LaunchPlan, place: HostPlan) -> str:
    """The command line the host's shell runs in its new session (torchrun, then the exit file)."""
    return torchrun_command(config, plan, place) + exit_file_words(place.host)


def torchrun_command(config: ClusterConfig, plan: LaunchPlan, place: HostPlan) -> str:
    """torchrun's command line with corral's environment (in the launcher's container, if any).

    ``place.cpu``: the host's allocator environment and core flags (``remote.hosts.cpu_placement``).
    """
    host, cpu = place.host, place.cpu
    tree = code_dir(host.workdir, plan.code_digest)
    code = shell_path(tree)
    # The host's own env table reaches this shell on its standard input (the transport's
    # ``with_host_env``), never on a command line; only corral's variables are set here.
    env = dict(cpu.env) if cpu is not None else {}
    if "PYTHONPATH" in host.env:  # the pushed code first, then the host's own additions
        code += ":$PYTHONPATH"
    env.update({HOST_ENV: host.name, RUN_ID_ENV: plan.run_id, "PYTHONUNBUFFERED": "1",
                LOG_LINE_PREFIX_ENV: log_line_prefix(place.first_rank),
                # INFO makes torchrun log the rendezvous result (``global_ranks=[...]``),
                # which tells the tailer which ranks run on this host.
                "LOGLEVEL": "INFO", RANK_BASE_ENV: str(place.first_rank)})
    if plan.membership_port is not None:  # planned changes live; a loss as the run says
        env.update({MEMBERSHIP_PORT_ENV: str(plan.membership_port),
                    HOST_LOSS_ENV: config.run.on_host_loss})
    if plan.join_generation is not None:  # the run's store is on the master, not here
        env.update({JOIN_ENV: str(plan.join_generation), MEMBERSHIP_ADDR_ENV: plan.master_addr,
                    JOIN_PHASES_ENV: plan.join_phases})
    if place.visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = place.visible_devices
    if place.interface:
        env.update(GLOO_SOCKET_IFNAME=place.interface, NCCL_SOCKET_IFNAME=place.interface)
    torchrun = ["-m", TORCHRUN_MODULE, *_rendezvous_words(config, plan, place),
                "--max-restarts", "0", "--log-dir", IN_RUN_DIR.rank_logs(host.name),
                "--redirects", "3", "--tee", "3"]
    if place.local_addr:
        torchrun += ["--local-addr", place.local_addr]
    words = " ".join(shlex.quote(w) for w in torchrun)
    if config.run.script is not None:
        env.update(script_settings(config.run, place, plan).to_env())
        env.pop(RUN_DIR_ENV)  # from --run-dir (trainer.integrations.script_main)
        threads = _threads(place)
        if threads is not None:  # the trainer's --threads, as torch and OpenMP read it
            env.setdefault("OMP_NUM_THREADS", str(threads))
    return (f"{_script_cwd(config, plan, host)}{env_prefix(env)}PYTHONPATH={code} "
            f"{_interpreter(host)} {words} {_entry_words(config, plan, place, tree)}")


def _threads(place: HostPlan) -> int | None:
    """Threads per rank: the host's ``threads``, else what its machine's sharing decides
    (``remote.hosts.cpu_placement``), else None (each rank's share of cores decides)."""
    if place.host.threads is not None:
        return place.host.threads
    return place.cpu.threads if place.cpu is not None else None


def _rendezvous_words(config: ClusterConfig, plan: LaunchPlan, place: HostPlan) -> list[str]:
    """torchrun's nodes and rendezvous: the run's static rendezvous at the master, or for a
    host joining the running run (``corral join``) a world of its own on that host
    (``--standalone``): its ranks take part in the run through its membership store, never
    through the run's rendezvous, whose agents would restart their workers for a new node."""
    if plan.join_generation is not None:
        return ["--standalone", "--nnodes", "1", "--nproc-per-node", str(place.nproc)]
    return ["--nnodes", str(plan.nnodes), "--nproc-per-node", str(place.nproc),
            "--node-rank", str(torch_node_rank(config, place)),
            "--rdzv-backend", "static", "--rdzv-endpoint", f"{plan.master_addr}:{plan.port}",
            "--rdzv-id", plan.run_id, "--rdzv-conf", f"timeout={RDZV_JOIN_TIMEOUT_S}"]


async def _no_space(transport: Transport, exc: RemoteCommandError, run_dir: str) -> bool:
    """Whether the launch script failed for want of space: bash says so; dash's printf says
    "I/O error", so the host's free space is asked then."""
    if "No space left on device" in exc.completed.stderr + exc.completed.stdout:
        return True
    asked = await transport.run(free_kib_command(run_dir), timeout=15.0)
    return asked.ok and asked.stdout.strip() == "0"


def torch_node_rank(config: ClusterConfig, place: HostPlan) -> int:
    """The host's ``--node-rank`` for torch's static rendezvous: 0 on the master, whose
    launcher serves the rendezvous store at ``master_addr:port`` (the port the check tested
    there), the other hosts after it in cluster.toml's order.

    Static, not c10d: every launcher waits for the others' connections to the master's store
    instead of re-reading the rendezvous state once a second (c10d's poll), and corral needs
    none of c10d's elasticity: torchrun never restarts ranks itself (``--max-restarts 0``), a
    restart or a lost host is a new launch of every host. torch's node order is not the ranks'
    order anyway: ranks are numbered in host order (``CORRAL_RANK_BASE``).
    """
    master = next(i for i, h in enumerate(config.hosts) if h.name == config.master_name)
    if place.node_rank == master:
        return 0
    return place.node_rank + 1 if place.node_rank < master else place.node_rank


def exit_file_words(host: HostSection) -> str:
    """Shell, after the launcher: its exit status to ``hosts/<host>.exit`` (none, quietly, on a
    full disk), which says the launcher ended by itself, so not after `corral stop` (in a
    container the host's shell outlives the stop, which ends torchrun only). In a container,
    this runs in the host's shell once the engine's client has returned: nothing is left."""
    exit_file = shlex.quote(IN_RUN_DIR.host_file(host.name, "exit"))
    stopped_file = shlex.quote(IN_RUN_DIR.host_file(host.name, "stopped"))
    return (f"; s=$?; [ -e {stopped_file} ] || {{ {{ echo $s > {exit_file}.tmp && mv "
            f"{exit_file}.tmp {exit_file}; }} 2>/dev/null || rm -f {exit_file}.tmp; }}")


def _interpreter(host: HostSection) -> str:
    """The interpreter word of the launcher command (inside the container on such a host)."""
    return inner_python(host) if host.container is not None else python_word(host)


def _entry_words(config: ClusterConfig, plan: LaunchPlan, place: HostPlan, tree: str) -> str:
    """What torchrun starts, quoted: corral's trainer and its flags, or the user's script
    (relative to the host's working directory, ``_script_cwd``) and its arguments, through
    ``trainer.integrations.script_main`` (the rank's command line names the run directory)."""
    user = plan.user
    run_dir = shell_path(plan.run_dir)
    if config.run.script is not None:
        assert user is not None
        cores = place.cpu.flags if place.cpu is not None and place.device == "cpu" else ()
        cwd = RunLayout(plan.run_dir).script_cwd(place.host.name)
        if config.launch_dir:  # launched from a folder inside the code folder
            cwd = f"{cwd}/{config.launch_dir}"
        script = posixpath.relpath(user.task_file, config.launch_dir or ".")
        return " ".join([f"-m {SCRIPT_MAIN} --run-dir {run_dir} --cwd {shell_path(cwd)}",
                         *map(shlex.quote, cores), shlex.quote(script),
                         *(shlex.quote(a) for a in config.run.args)])
    flags = [shlex.quote(w) for w in trainer_flags(config.run, place, plan)]
    flags += [shlex.quote(w) for w in (place.cpu.flags if place.cpu is not None else ())]
    if user is not None:  # the task file inside the pushed tree (shell syntax: ~ expands)
        flags += ["--task", shell_path(user.task_flag(tree))]
    return f"-m trainer --run-dir {run_dir} {' '.join(flags)}"


def script_settings(run: RunSection, place: HostPlan, plan: LaunchPlan) -> ScriptSettings:
    """What a user's script is told (``trainer.integrations.contract``): this launch's restart
    count (a ``--resume`` counts as one), the policy and split, the host's slowdown."""
    return ScriptSettings(run_dir=plan.run_dir, restart=max(plan.restart, int(plan.resume)),
                          policy=cast(Policy, plan.policy or run.policy), split=run.split,
                          rebalance_every=run.rebalance_every,
                          slowdown=(place.host.slowdown,), backend=plan.backend,
                          device=place.device,
                          hang_limit=run.hang_limit)


def host_command(config: ClusterConfig, plan: LaunchPlan, place: HostPlan) -> str:
    """What the host's new session runs (``--dry-run`` shows it): ``launcher_command``, in
    the host's launcher container where it has one."""
    if place.host.container is None:
        return launcher_command(config, plan, place)
    return _in_container(place.host, plan.run_id, torchrun_command(config, plan, place))


def _script_cwd(config: ClusterConfig, plan: LaunchPlan, host: HostSection) -> str:
    """Shell: a script run's working directory for ``host``, a copy of the pushed user folder
    (links kept as links) made or refreshed at each launch: the script's relative reads find
    its files, its relative writes land in the run directory, never in the shared code tree,
    and each host has its own (``RunLayout.script_cwd``)."""
    if config.run.script is None:
        return ""
    layout = RunLayout(plan.run_dir)
    cwd = shell_path(layout.script_cwd(host.name))
    pushed = shell_path(f"{code_dir(host.workdir, plan.code_digest)}/{USER_CODE_DIR}")
    # The data sync's link list (target<TAB>path a line, remote.hosts.data_sync): each path of
    # the working directory linked to its cached, read-only file (or the file in place), or
    # copied where the script may write it again (remote.run.seed_cwd).
    keep = (layout.path("kept") + f"/{host.name}") if plan.resume or plan.restart else ""
    data = seed_words(_interpreter(host), layout.host_file(host.name, "data"),
                      layout.script_cwd(host.name), layout.host_file(host.name, "seeded"), keep)
    return f"mkdir -p {cwd} && cp -R {pushed}/. {cwd}/ && {data} && "


def _clear(host: HostSection, run_id: str) -> str:
    """Shell: a restart's launcher container reuses the name; the last one's is removed."""
    return f"{remove_command(host, run_id)}; " if host.container is not None else ""


def _in_container(host: HostSection, run_id: str, torchrun: str) -> str:
    """The host's launcher container running ``torchrun``, then the exit file."""
    return launcher_words(host, run_id, torchrun) + exit_file_words(host)


def _session(config: ClusterConfig, plan: LaunchPlan, place: HostPlan) -> str:
    """What ``setsid`` starts: ``sh -c`` running the launcher (in its container where the
    host has one) and then writing the exit file."""
    return f"sh -c {shlex.quote(host_command(config, plan, place))}"


async def launch_host(
    transport: Transport, config: ClusterConfig, plan: LaunchPlan, place: HostPlan,
) -> int:
    """Start the host's launcher in the background; return its process-group id."""
    host = transport.host
    logs = shlex.quote(IN_RUN_DIR.host_logs(host.name))
    launcher_log = shlex.quote(IN_RUN_DIR.launcher_log(host.name))
    pgid_file = shlex.quote(IN_RUN_DIR.host_file(host.name, "pgid"))
    exit_file = shlex.quote(IN_RUN_DIR.host_file(host.name, "exit"))
    ranks_file = shlex.quote(IN_RUN_DIR.host_file(host.name, "ranks"))
    # The tailer reports the host's ranks (from this file) once torchrun logs its rendezvous.
    planned = shlex.quote(IN_RUN_DIR.host_file(host.name, "planned"))
    stopped_file = shlex.quote(IN_RUN_DIR.host_file(host.name, "stopped"))
    leader_file = shlex.quote(IN_RUN_DIR.host_file(host.name, "leader"))
    planned_ranks = shlex.quote(f"{JOIN_MARK}\n" if plan.join_generation is not None
                                else "".join(f"{r}\n" for r in place.ranks))
    run_dir = shell_path(plan.run_dir)
    # Not a job-control shell, so the background child is no group leader and setsid(1)
    # makes it the leader of a new session without forking: $! is the new process group.
    # umask 077: the run directory and everything the launcher and its ranks write in it
    # (logs, checkpoints, events) are the run's user's alone.
    script = (
        f"set -e; umask 077; mkdir -p {run_dir}; chmod 700 {run_dir}; cd {run_dir}; "
        f"mkdir -p {logs} {IN_RUN_DIR.HOSTS}; "
        f"rm -f {exit_file} {ranks_file} {stopped_file} {pgid_file} {leader_file}; "
        f"printf %s {planned_ranks} > {planned}; {_clear(host, plan.run_id)}"
        f"setsid {_session(config, plan, place)} </dev/null >>{launcher_log} 2>&1 & "
        f"p=$!; s=$(cat /proc/$p/stat 2>/dev/null) && s=${{s##*\") \"}} && set -- $s && "
        f"echo \"${{20}}\" > {leader_file} || true; "
        f"echo $p > {pgid_file}.tmp; mv {pgid_file}.tmp {pgid_file}; echo $p"
    )
    try:
        done = await transport.run(script, check=True, timeout=30.0)
    except RemoteCommandError as exc:
        if await _no_space(transport, exc, plan.run_dir):
            raise disk_full(host.name, plan.run_dir) from None
        raise
    try:
        return int(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise CorralError(
            f"launch on {host.name} gave no process id: {done.stdout[:200]!r}"
        ) from None
