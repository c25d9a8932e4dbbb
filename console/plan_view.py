"""The launch plan as people read it: ``corral run --dry-run`` and the console's check screen
show the same table (host, ranks, device, precision, backend, interface, share) and each host's
exact command."""

from __future__ import annotations

import shlex

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from remote.api import LaunchPreview, PlannedHost


def _ranks_text(ranks: tuple[int, ...]) -> str:
    """A host's (consecutive) global ranks: ``4-7``, or ``0,1`` for one or two."""
    if len(ranks) > 2:
        return f"{ranks[0]}-{ranks[-1]}"
    return ",".join(map(str, ranks))


def _device_text(host: PlannedHost) -> str:
    if host.device == "cpu":
        return "cpu" + (" (GPUs hidden)" if host.visible_devices == "" else "")
    pinned = f", CUDA_VISIBLE_DEVICES={host.visible_devices}" if host.visible_devices else ""
    return f"cuda × {host.gpus}{pinned}"


def plan_summary(plan: LaunchPreview) -> str:
    """One line: backend, world size, rendezvous and the preview's run id."""
    return (f"launch plan (nothing started): backend {plan.backend}, {plan.world_size} "
            f"rank(s), rendezvous {plan.rendezvous}, run id {plan.run_id} (a real run gets "
            "a new one)")


def _script_table(plan: LaunchPreview) -> Table:
    """A script run's plan: what corral decides (ranks, device, backend, interface); the
    script's own arguments decide its batch, shares and precision."""
    title = (f"{plan_summary(plan)}\nevery rank runs your script: {plan.script} (its own "
             "batch and precision; bf16/fp16 that a rank cannot do becomes what precision "
             "\"auto\" gives there)")
    table = Table(title=title, title_justify="left")
    for name in ("host", "ranks", "device", "backend", "interface"):
        table.add_column(name, overflow="fold")
    for host in plan.hosts:
        table.add_row(host.host, _ranks_text(host.ranks), _device_text(host), plan.backend,
                      host.interface or "chosen by Gloo/NCCL")
    return table


def plan_table(plan: LaunchPreview) -> Table:
    """One row per host: ranks, device, precision, backend, interface and first-step
    share (a script run: ``_script_table``)."""
    if plan.script is not None:
        return _script_table(plan)
    table = Table(title=plan_summary(plan), title_justify="left")
    for name in ("host", "ranks", "device", "precision", "backend", "interface", "share"):
        table.add_column(name, overflow="fold")
    for host in plan.hosts:
        share = ",".join(map(str, host.shares)) if host.shares else "measured at start"
        table.add_row(host.host, _ranks_text(host.ranks), _device_text(host), host.precision,
                      plan.backend,
                      host.interface or "chosen by Gloo/NCCL", share)
    return table


def plan_commands(plan: LaunchPreview) -> Text:
    """Each host's command line, whole (to copy), under its host name."""
    text = Text()
    if plan.seed_program:
        text.append("each host first prepares the script's working directory (its data linked "
                    "in, what a run writes copied, a relaunch's newest checkpoint kept: "
                    "remote/run/seed_cwd.py) with the program its command names \"$SEED_CWD\"; "
                    "to run a command by hand, set it first:\n", style="bold")
        text.append(f"  SEED_CWD={shlex.quote(plan.seed_program)}\n")
    for host in plan.hosts:
        text.append(f"{host.host}:\n", style="bold")
        text.append(f"  {host.command}\n")
        if host.env_names:
            text.append(f"  with env {', '.join(host.env_names)} from cluster.toml (values sent "
                        "on standard input, never on a command line)\n")
    if plan.firewall:
        text.append("firewall on the master (the rendezvous store listens on every "
                    "interface while the run lives; docs/security.md):\n", style="bold")
        for line in plan.firewall:
            text.append(f"  {line}\n")
    return text


def plan_renderable(plan: LaunchPreview) -> RenderableType:
    """The table, then the commands."""
    return Group(plan_table(plan), plan_commands(plan))
