"""The launch a run would make now, without starting anything (``corral run --dry-run``, and
the console's check screen): the pre-flight check, then the launch plan built from its facts,
rendered as data (``remote.events.LaunchPreview``) for the console to show."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from remote.checks.plan import ClusterPlan, LaunchFacts, PlanError, master_address, plan_cluster
from remote.checks.preflight import check_and_plan
from remote.config.cluster import ClusterConfig
from remote.config.task_code import user_code
from remote.events import CheckItem, CheckReport, LaunchPreview, PlannedHost
from remote.hosts.pool import HostPool
from remote.hosts.push import build_bundle
from remote.records.runs import new_run_id, run_dir_for
from remote.run.launch import LaunchPlan, launcher_command
from trainer.balance.balancer import equal_split


def first_shares(config: ClusterConfig, plan: ClusterPlan) -> tuple[int, ...] | None:
    """Every rank's samples of the first step when known before the run: the given split, or
    the equal one of the static policy (the others measure capacities when they start)."""
    if config.run.split is not None:
        return config.run.split
    if config.run.policy == "static":
        return equal_split(config.run.global_batch, plan.world_size)
    return None


def preview(config: ClusterConfig, facts: LaunchFacts, port: int, code_digest: str,
            run_id: str) -> LaunchPreview:
    """The plan and each host's exact command for a launch with the given facts."""
    master_addr = master_address(config)
    plan = plan_cluster(config, facts, master_addr)
    launch = LaunchPlan(run_id=run_id, run_dir=run_dir_for(config, run_id),
                        code_digest=code_digest, master_addr=master_addr, port=port,
                        nnodes=len(config.hosts), backend=plan.backend)
    shares = first_shares(config, plan)
    hosts = tuple(PlannedHost(
        host=place.host.name, ranks=tuple(place.ranks), device=place.device, gpus=place.gpus,
        visible_devices=place.visible_devices, interface=place.interface,
        precision=place.precision if config.run.precision == "auto" else config.run.precision,
        shares=tuple(shares[r] for r in place.ranks) if shares else None,
        command=launcher_command(config, launch, place)) for place in plan.hosts)
    return LaunchPreview(run_id=run_id, backend=plan.backend, world_size=plan.world_size,
                         rendezvous=f"{master_addr}:{port}", hosts=hosts)


async def check_with_preview(config: ClusterConfig, pool: HostPool) -> CheckReport:
    """The pre-flight check and, when it passed, the launch it would lead to."""
    report, facts = await check_and_plan(config, pool)
    setting = config.cluster.rendezvous_port
    port = facts.port if setting == "auto" else int(setting)
    if not report.ok or port is None:
        return report
    user = user_code(config.run, config.path.parent)  # the same tree a run pushes
    code = await asyncio.to_thread(
        build_bundle, user_folder=user.folder if user is not None else None)
    try:
        planned = preview(config, facts, port, code.digest, new_run_id(config.cluster.name))
    except PlanError as exc:
        failed = CheckItem(host="*", name="plan", ok=False, detail=exc.message,
                           hint="change [run] backend or the hosts' gpus in cluster.toml")
        return replace(report, items=(*report.items, failed))
    return replace(report, plan=planned)
