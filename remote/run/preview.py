"""The launch a run would make now, without starting anything (``corral run --dry-run``, and
the console's check screen): the pre-flight check, then the launch plan built from its facts,
rendered as data (``remote.events.LaunchPreview``) for the console to show."""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import replace

from remote.checks.data_room import data_room_items
from remote.checks.plan import ClusterPlan, LaunchFacts, PlanError, master_address, plan_cluster
from remote.checks.preflight import check_and_plan
from remote.checks.task_import import data_files, push_then_import
from remote.config.cluster import ClusterConfig
from remote.config.task_code import UserCode, user_code
from remote.events import CheckItem, CheckReport, LaunchPreview, PlannedHost
from remote.hosts.pool import HostPool
from remote.hosts.push import build_bundle
from remote.records.runs import new_run_id, run_dir_for
from remote.run.launch import LaunchPlan, host_command
from remote.run.leftovers import end_finished_leftovers
from remote.run.seed_cwd import SEED_PY, SEED_VAR, seed_by_name
from trainer.balance.balancer import equal_split


def first_shares(config: ClusterConfig, plan: ClusterPlan) -> tuple[int, ...] | None:
    """Every rank's samples of the first step when known before the run: the given split, or
    the equal one of the static policy (the others measure capacities when they start)."""
    if config.run.split is not None:
        return config.run.split
    if config.run.policy == "static":
        return equal_split(config.run.global_batch, plan.world_size)
    return None


EPHEMERAL_PORTS = "32768:60999"
"""Linux's default ``net.ipv4.ip_local_port_range``: where the ranks' store and Gloo listen."""


def firewall_lines(config: ClusterConfig, master_addr: str, port: int) -> tuple[str, ...]:
    """iptables lines for each host: TCP from the cluster's hosts (their addresses as
    cluster.toml gives them, and the master address) accepted; the rendezvous port and the
    ports the system picks for the ranks' store and Gloo closed to everyone else."""
    sources = sorted({h.address for h in config.hosts if not h.is_local} | {master_addr})
    allow = [f"iptables -A INPUT -p tcp -s {shlex.quote(source)} -j ACCEPT"
             for source in sources]
    return (*allow, f"iptables -A INPUT -p tcp --dport {port} -j DROP",
            f"iptables -A INPUT -p tcp --dport {EPHEMERAL_PORTS} -j DROP")


def preview(config: ClusterConfig, facts: LaunchFacts, port: int, code_digest: str,
            run_id: str, user: UserCode | None) -> LaunchPreview:
    """The plan and each host's exact command for a launch with the given facts (``user``:
    the run's user code, ``user_code``)."""
    master_addr = master_address(config)
    plan = plan_cluster(config, facts, master_addr)
    launch = LaunchPlan(run_id=run_id, run_dir=run_dir_for(config, run_id),
                        code_digest=code_digest, master_addr=master_addr, port=port,
                        nnodes=len(config.hosts), user=user, backend=plan.backend)
    script = config.run.script
    shares = first_shares(config, plan) if script is None else None
    hosts = tuple(PlannedHost(
        host=place.host.name, ranks=tuple(place.ranks), device=place.device, gpus=place.gpus,
        visible_devices=place.visible_devices, interface=place.interface,
        precision=place.precision,
        shares=tuple(shares[r] for r in place.ranks) if shares else None,
        command=seed_by_name(host_command(config, launch, place)),
        env_names=tuple(sorted(place.host.env))) for place in plan.hosts)
    return LaunchPreview(run_id=run_id, backend=plan.backend, world_size=plan.world_size,
                         rendezvous=f"{master_addr}:{port}", hosts=hosts,
                         firewall=firewall_lines(config, master_addr, port),
                         script=None if script is None
                         else shlex.join([script, *config.run.args]),
                         seed_program=SEED_PY if any(f"${SEED_VAR}" in h.command
                                                     for h in hosts) else "")


def _sorted(config: ClusterConfig, items: list[CheckItem]) -> tuple[CheckItem, ...]:
    """The report's order: each host's items together, the cluster-wide ones last."""
    order = {h.name: i for i, h in enumerate(config.hosts)}
    return tuple(sorted(items, key=lambda it: order.get(it.host, len(order))))


async def check_with_preview(config: ClusterConfig, pool: HostPool) -> CheckReport:
    """The pre-flight check and, when it passed, the launch it would lead to. With a user task
    the check pushes the code (content-addressed: the run reuses it) and imports the task file
    on each host, as the ranks will (``remote.checks.task_import``)."""
    user = user_code(config.run, config.path.parent)  # the same tree a run pushes
    code = await asyncio.to_thread(
        build_bundle, user_folder=user.folder if user is not None else None,
            with_data=config.run.script is None)  # a script's data: the data sync
    if user is None and not data_files(config):
        report, facts = await check_and_plan(config, pool, user=user)
    else:
        report, facts = await check_and_plan(config, pool, user=user, code_digest=code.digest,
                                             after_probe=push_then_import(config, code, {},
                                                                          user))
    report = await end_finished_leftovers(config, pool, report, facts.leftovers)
    report = replace(report, items=_sorted(config, [
        *report.items, *await data_room_items(config, pool, user)]))
    setting = config.cluster.rendezvous_port
    port = facts.port if setting == "auto" else int(setting)
    if not report.ok or port is None:
        return report
    try:
        planned = preview(config, facts, port, code.digest, new_run_id(config.cluster.name),
                          user)
    except PlanError as exc:
        failed = CheckItem(host="*", name="plan", ok=False, detail=exc.message,
                           hint="change [run] backend or the hosts' gpus in cluster.toml")
        return replace(report, items=(*report.items, failed))
    return replace(report, plan=planned)
