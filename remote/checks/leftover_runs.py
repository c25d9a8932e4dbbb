"""Whose run a leftover process belongs to, and the ``corral stop`` that reaches it.

Two clusters may share a ``run_root`` (two cluster.toml files over the same hosts). ``corral
stop RUN`` looks a run up among the runs of the cluster.toml it is given, so a leftover of the
other cluster's run needs that cluster's file: its ``run.json`` on this machine names it
(``config_path``). A run started from another machine has no record here; its id still starts
with its cluster's name (``run_id_prefix``).
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig, HostSection
from remote.events import CheckItem
from remote.records.runs import read_run_info, run_id_prefix
from trainer.launch_contract import RUN_ID_ENV

if TYPE_CHECKING:
    from remote.checks.host_facts import HostFacts


def leftover_run(config: ClusterConfig, run_id: str) -> tuple[str, str]:
    """What to call ``run_id`` in a leftovers line, and the command that stops it."""
    try:
        info = read_run_info(config, run_id)
    except CorralError:
        info = None
    if info is not None and info.cluster != config.cluster.name:
        if info.config_path:
            return (f"{run_id} (cluster {info.cluster!r} of {info.config_path})",
                    f"corral stop -c {shlex.quote(info.config_path)} {run_id}")
        return (f"{run_id} (cluster {info.cluster!r})",
                f"corral stop -c <cluster.toml of {info.cluster!r}> {run_id}")
    if info is None and not run_id.startswith(run_id_prefix(config.cluster.name)):
        # Not recorded here, and not named after this cluster: another machine started it.
        return (f"{run_id} (another cluster's run, started from another machine)",
                f"corral stop -c <its cluster.toml> {run_id}, on the machine that started it")
    return run_id, f"corral stop {run_id}"


def leftovers_line(config: ClusterConfig, run_ids: list[str]) -> tuple[str, str]:
    """The runs named for the check's detail, and its hint: one stop command per run."""
    named = [leftover_run(config, run_id) for run_id in sorted(run_ids)]
    return ", ".join(name for name, _ in named), "; ".join(stop for _, stop in named)


def _leftovers(ps_output: str, run_root: str) -> dict[str, list[int]]:
    """Process ids per run id of processes started with ``--run-dir <run_root>/<run id>`` and
    the run id in their environment (``LEFTOVER_PROBE``'s lines).

    Every rank (and its torchrun, which carries the trainer's arguments) has both; a program
    that merely has a file of the run open has neither, and one that only names the run
    directory in its arguments (a user's ``pgrep -f -- '--run-dir ...'``) lacks the variable.
    """
    root = run_root.rstrip("/") + "/"
    found: dict[str, list[int]] = {}
    for line in ps_output.splitlines():
        pid, _, rest = line.strip().partition(" ")
        env_run_id, _, args = rest.partition(" ")
        for marker in (f"--run-dir {root}", f"--run-dir={root}"):
            if marker in args and pid.isdigit():
                run_id = args.split(marker, 1)[1].split("/", 1)[0].split(" ", 1)[0]
                if run_id and run_id == env_run_id:
                    found.setdefault(run_id, []).append(int(pid))
                break
    return found


LEFTOVER_PROBE = (
    "ps -ww -eo pid=,args= | while read -r p a; do case \"$a\" in *--run-dir*) "
    f"r=$(tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | sed -n 's/^{RUN_ID_ENV}=//p' "
    '| head -n 1); printf "%s %s %s\\n" "$p" "${r:--}" "$a";; esac; done')
"""Per process that names ``--run-dir``: its id, the run id in its environment (``-`` for
none) and its arguments."""


def judge_leftovers(host: HostSection, config: ClusterConfig, home: str,
                     ps_output: str | None, facts: HostFacts) -> None:
    """The host's ``leftovers`` item, from ``LEFTOVER_PROBE``'s output (None: the probe did
    not report, so nothing was looked at: never ``ok``)."""
    if ps_output is None:
        facts.items.append(CheckItem(
            host=host.name, name="leftovers", ok=False,
            detail="could not list the host's processes: the probe did not report",
            hint="run the check again; the host's other items say what failed"))
        return
    run_root = config.cluster.run_root
    if run_root == "~" or run_root.startswith("~/"):
        run_root = home.strip() + run_root[1:]
    runs = _leftovers(ps_output, run_root)
    facts.leftover_runs = tuple(sorted(runs))
    count = sum(len(pids) for pids in runs.values())
    named, hint = leftovers_line(config, list(runs))
    detail = "none" if not runs else f"{count} process(es) of run(s) {named}"
    facts.items.append(CheckItem(host=host.name, name="leftovers", ok=not runs, detail=detail,
                                 hint=hint))
