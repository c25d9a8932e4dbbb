"""The pods' start script: each host's exact ``corral run`` command, picked by the pod's index.

Every pod runs the same script from the ConfigMap. It reads its index from what the controller
sets (a PyTorchJob's ``RANK``, a JobSet pod's global index, a TrainJob's ``PET_NODE_RANK``),
unpacks the pushed code under ``$HOME`` and runs, in the run directory on the claim, the command
``corral run`` gives that host (``remote.run.launch.launcher_command``: torchrun with static
rendezvous, the trainer and its flags), the rendezvous endpoint being the job's master service.
The pod exits with torchrun's status.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from remote.checks.plan import ClusterPlan, HostPlan
from remote.config.cluster import ClusterConfig
from remote.config.task_code import UserCode
from remote.hosts.push import MARKER, code_dir
from remote.hosts.transport import shell_path
from remote.k8s.kinds import PLACEHOLDER_MASTER
from remote.records.runs import run_dir_for
from remote.run.launch import LaunchPlan, launcher_command
from trainer.run_layout import IN_RUN_DIR, RunLayout

BUNDLE_DIR = "bundle"
"""Where the ConfigMap is mounted, below the pods' ``HOME``."""
CODE_ARCHIVE = "code.tar.gz"
"""The ConfigMap key of the pushed packages (a gzipped tar of ``push.build_bundle``)."""
START_SCRIPT = "start.sh"
"""The ConfigMap key of the start script."""
RUN_RECORD_STARTED = '"started": 0.0,'
"""The start time in the ConfigMap's ``run.json``; the first pod writes the real one."""
RUN_RECORD_RUNNING = '"state": "running"'
"""The state in the ConfigMap's ``run.json``; the first pod writes the outcome at the end."""


@dataclass(frozen=True, kw_only=True)
class PodStart:
    """Where a pod learns its index and the rendezvous endpoint (shell words)."""

    node: str
    """The variable holding the pod's index among all pods (0: the first host)."""
    endpoint: str
    """``host:port`` of the rendezvous (shell syntax, quoted)."""


def pod_launch(config: ClusterConfig, plan: ClusterPlan, *, run_id: str, digest: str,
               port: int, user: UserCode | None) -> LaunchPlan:
    """The launch every pod makes (``config`` and ``plan`` from ``remote.k8s.kinds``;
    ``user``: the run's user code)."""
    return LaunchPlan(run_id=run_id, run_dir=run_dir_for(config, run_id), code_digest=digest,
                      master_addr=PLACEHOLDER_MASTER, port=port, nnodes=len(plan.hosts),
                      user=user, backend=plan.backend)


def pod_command(config: ClusterConfig, launch: LaunchPlan, place: HostPlan) -> str:
    """``place``'s ``corral run`` command with the rendezvous at ``$endpoint``."""
    command = launcher_command(config, launch, place)
    placeholder = f" --rdzv-endpoint {PLACEHOLDER_MASTER}:{launch.port} "
    if command.count(placeholder) != 1:
        raise AssertionError(f"no single rendezvous endpoint in {command!r}")
    return command.replace(placeholder, ' --rdzv-endpoint "$endpoint" ')


def start_script(config: ClusterConfig, launch: LaunchPlan, order: tuple[HostPlan, ...],
                 start: PodStart) -> str:
    """The script every pod runs; ``order``: the hosts by pod index."""
    code = shell_path(code_dir("~", launch.code_digest))
    run_dir = shell_path(launch.run_dir)
    archive = shell_path(f"~/{BUNDLE_DIR}/{CODE_ARCHIVE}")
    record = shell_path(f"~/{BUNDLE_DIR}/{RunLayout.RUN_RECORD}")
    lines = [
        f"# corral run {launch.run_id}: one pod's start (written by `corral export k8s`)",
        f'node="${{{start.node}:?the pod index is not set}}"',
        f"endpoint={start.endpoint}",
        f"code={code}",
        f'[ -e "$code"/{MARKER} ] || {{ mkdir -p "$code" && tar -xzf {archive} -C "$code" '
        f'&& : > "$code"/{MARKER}; }} || exit 1',
        'case "$node" in',
    ]
    for index, place in enumerate(order):
        name = place.host.name
        lines += [f"  {index}) logs={shlex.quote(IN_RUN_DIR.host_logs(name))}; "
                  f"exit_file={shlex.quote(IN_RUN_DIR.host_file(name, 'exit'))}; "
                  f"planned_file={shlex.quote(IN_RUN_DIR.host_file(name, 'planned'))}; "
                  f"planned={shlex.quote(' '.join(str(r) for r in place.ranks))}",
                  f"     launch() {{ {pod_command(config, launch, place)}",
                  "     } ;;"]
    lines += [
        '  *) echo "corral: no host for pod index $node" >&2; exit 2 ;;',
        "esac",
        f'mkdir -p {run_dir} && cd {run_dir} && mkdir -p "$logs" {IN_RUN_DIR.HOSTS} || exit 1',
        "# what `corral report` and the console read once the run directory is copied back",
        'printf "%s\\n" $planned > "$planned_file"',
        f"[ \"$node\" != 0 ] || sed 's/{RUN_RECORD_STARTED}/\"started\": '\"$(date +%s)\"',/' "
        f"{record} > {RunLayout.RUN_RECORD}",
        "launch",
        'status="$(cat "$exit_file" 2>/dev/null || echo 1)"',
        'if [ "$node" = 0 ]; then',
        '  state=failed; [ "$status" != 0 ] || state=completed',
        f"  sed 's/{RUN_RECORD_RUNNING}/\"state\": \"'\"$state\"'\"/' {RunLayout.RUN_RECORD} "
        f"> {RunLayout.RUN_RECORD}.tmp && mv {RunLayout.RUN_RECORD}.tmp {RunLayout.RUN_RECORD}",
        "fi",
        'exit "$status"',
        "",
    ]
    return "\n".join(lines)
