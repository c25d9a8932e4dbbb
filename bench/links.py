"""Real links: the full-mesh check's time on many namespace hosts, and one cluster trained over
each shaped link, measured next to the estimate's prediction.

1. **mesh**: ``--mesh-hosts`` namespace hosts (default 16) on one bridge; the full-mesh check
   (``remote/checks/mesh.py``: every host connects to every other one, then every pair is
   measured) is timed from the controller namespace, ``--rounds`` times, interleaved with
   its reach part alone (no measuring), over SSH connections opened beforehand (as the
   check's probes leave them); medians are printed.
2. **profiles**: three namespace hosts (n3 ``--slow-factor`` times slower than n1 and n2, by
   corral's emulated slowdown), profiled once with ``corral profile`` (each host its own
   store). Then for each link profile of ``tests/remote/netns_links.py`` (1 Gbit/s, 100 Mbit/s,
   50 Mbit/s Wi-Fi with 5 ± 2 ms and 1 % loss) on n3's link: the check (n3's link as the mesh
   measured it; the estimate's step time and who it says sits out), then ``corral run``;
   measured throughput is the global batch over rank 0's median step time after the warm-up
   steps (``--warmup``, default 12: past the balancer's first decision, at step 10, so the
   steady state is compared with the estimate), and a host sat out when its ranks had no share
   in the last step. ``CORRAL_BENCH_KEEP_RUNS=DIR`` copies each run's directory there. Where the
   kernel has no netem the Wi-Fi profile is its rate and loss only (the output says so).
   ``--host-cpu CORES`` gives every host a CPU share of its own (bench/many_hosts.py's cgroup
   quota), before the profiles, so that profiles and runs see the same CPU, as on machines of
   their own; without it the three hosts share this machine's cores.

Needs root, ``ip netns``, sshd, ssh-keygen and tc (the netns tests' conditions).

    python bench/links.py                     # mesh on 16 hosts, then the three profiles
    python bench/links.py --mesh-hosts 0      # profiles only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.remote import netns, netns_links  # noqa: E402

KEEP_RUNS = os.environ.get("CORRAL_BENCH_KEEP_RUNS")
"""A folder to copy each run's directory into (events, logs), to see what a run decided."""
RUN = ('model = "simple_cnn"\ndataset = "synthetic_image"\nsamples = 960\nglobal_batch = 48\n'
       'steps = {steps}\ncheckpoint_every = 1000\n')


async def _inner_mesh(path: str, rounds: int) -> None:
    from remote.checks.mesh import check_mesh
    from remote.config.read import load_cluster
    from remote.hosts.pool import HostPool

    config = load_cluster(Path(path))
    pool = HostPool(config)
    try:
        addresses = {h.name: h.address for h in config.hosts}
        await check_mesh(config, pool, addresses, measure=False)  # SSH connections opened
        times: dict[str, list[float]] = {"measured": [], "reach only": []}
        pairs = blocked = 0
        for _ in range(rounds):  # interleaved: the whole check, then its reach part alone
            for label, measure in (("measured", True), ("reach only", False)):
                result = await check_mesh(config, pool, addresses, measure=measure)
                times[label].append(result.seconds)
                pairs = len(result.links)
                blocked += sum(not link.reached for link in result.links)
    finally:
        await pool.aclose()
    print(json.dumps({"seconds": times, "directions": pairs, "blocked": blocked}))


async def _inner_check(path: str) -> None:
    from remote.checks.preflight import check_cluster
    from remote.config.read import load_cluster
    from remote.hosts.pool import HostPool
    from trainer.balance.links import host_links

    config = load_cluster(Path(path))
    pool = HostPool(config)
    try:
        report = await check_cluster(config, pool)
    finally:
        await pool.aclose()
    links = host_links(report.links)
    print(json.dumps({
        "ok": report.ok, "failures": [f"{i.host} {i.name}: {i.detail}" for i in report.failures()],
        "link_mbit": {name: rate * 8 / 1e6 for name, rate in links.items()},
        "step_s": max((v.step_s for v in report.estimate), default=0.0),
        "sits_out": [v.host for v in report.estimate if not v.missing and not v.pays],
        "missing": sorted({v.missing for v in report.estimate if v.missing}),
        "global_batch": config.run.global_batch}))


def inner(box: netns.NetnsCluster, *args: str) -> dict[str, object]:
    """This script's ``--inner-*`` part run from the controller's namespace."""
    argv = box.in_ctl(sys.executable, str(Path(__file__).resolve()), *args)
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "HOME": str(box.root), "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def bench_mesh(hosts: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        box = netns.build(Path(root), hosts=hosts)
        try:
            path = box.write_cluster_toml(sys.executable, run=RUN.format(steps=2))
            found = inner(box, "--inner-mesh", str(path), str(rounds))
        finally:
            box.close()
    kinds = found["seconds"]
    assert isinstance(kinds, dict)
    for label, times in kinds.items():
        print(f"mesh check ({label}), {hosts} namespace hosts ({found['directions']} "
              f"directions, {found['blocked']} blocked in all rounds): median "
              f"{statistics.median(times):.2f} s over {rounds} rounds "
              f"({', '.join(f'{t:.2f}' for t in times)})", flush=True)


def run_throughput(box: netns.NetnsCluster, steps: int, warmup: int) -> tuple[float, list[str]]:
    """``corral run``: the cluster's samples/s (median after ``warmup``) and who sat out."""
    before = set((box.root / "runs").glob("*"))
    done = netns.corral(box, "run", timeout=900)
    if done.returncode != 0:
        raise RuntimeError((done.stdout + done.stderr)[-3000:])
    run_dir = next(p for p in (box.root / "runs").glob("*") if p not in before
                   and (p / "run.json").is_file())
    if KEEP_RUNS:
        shutil.copytree(run_dir, Path(KEEP_RUNS) / f"{run_dir.name}-{len(before)}")
    step_s: dict[int, float] = {}
    batch, last_shares = 0, {}
    for path in run_dir.rglob("rank-*.jsonl"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "start" and event["rank"] == 0:
                batch = event["global_batch"]
            if event["event"] == "step":
                if event["rank"] == 0 and event["step"] > warmup:
                    step_s[event["step"]] = event["step_s"]
                if event["step"] == steps:
                    last_shares[event["rank"]] = event["local_batch"]
    names = [node.name for node in box.nodes]
    sat_out = [names[rank] for rank, share in sorted(last_shares.items()) if share == 0]
    return batch / statistics.median(step_s.values()), sat_out


def bench_profiles(steps: int, warmup: int, slow: float, host_cpu: float | None) -> None:
    from bench._hosts_cpu import HostsCpuLimit

    with tempfile.TemporaryDirectory() as root:
        box = netns.build(Path(root), hosts=3)
        limit = None
        try:
            if host_cpu:  # before the profiles: they and the runs see the same CPU
                limit = HostsCpuLimit(box, host_cpu)
                print(f"every host {host_cpu:g} core ({limit.describe()})", flush=True)
            lines = {node.name: f'env = {{ CORRAL_PROFILE_DIR = "{root}/profiles-{node.name}" }}\n'
                     for node in box.nodes}
            lines["n3"] += f"slowdown = {slow}\n"
            box.write_cluster_toml(sys.executable, run=RUN.format(steps=steps), host_lines=lines)
            profiled = netns.corral(box, "profile", timeout=900)
            if profiled.returncode != 0:
                raise RuntimeError((profiled.stdout + profiled.stderr)[-3000:])
            path = str(box.root / "cluster.toml")
            print(f"{'n3 link':<58} {'measured':>9} {'predicted':>9} {'ratio':>6}  "
                  f"{'n3 mesh Mbit/s':>14}  estimate sits out / sat out", flush=True)
            for link in netns_links.PROFILES:
                netns_links.shape(box, 2, link)
                try:
                    check = inner(box, "--inner-check", path)
                    measured, sat_out = run_throughput(box, steps, warmup)
                finally:
                    netns_links.unshape(box, 2)
                step_s = float(check["step_s"])  # type: ignore[arg-type]
                batch = int(check["global_batch"])  # type: ignore[call-overload]
                predicted = batch / step_s if step_s else float("nan")
                mesh = check["link_mbit"].get("n3", float("nan"))  # type: ignore[union-attr]
                print(f"{netns_links.shaped_as(link):<58} {measured:>9.1f} {predicted:>9.1f} "
                      f"{predicted / measured:>6.2f}  {mesh:>14.1f}  "
                      f"{check['sits_out'] or '-'} / {sat_out or '-'}"
                      f"{'  missing: ' + str(check['missing']) if check['missing'] else ''}",
                      flush=True)
        finally:
            box.close()
            if limit is not None:
                limit.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mesh-hosts", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=12,
                        help="steps left out of the median: the balancer decides at step 10")
    parser.add_argument("--slow-factor", type=float, default=3.0)
    parser.add_argument("--skip-profiles", action="store_true")
    parser.add_argument("--host-cpu", type=float, default=None, metavar="CORES",
                        help="profiles: every host its own CPU share (a cgroup CFS quota, as "
                             "bench/many_hosts.py), as machines of their own")
    parser.add_argument("--inner-mesh", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--inner-check", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner_mesh:
        asyncio.run(_inner_mesh(args.inner_mesh[0], int(args.inner_mesh[1])))
        return
    if args.inner_check:
        asyncio.run(_inner_check(args.inner_check))
        return
    if args.mesh_hosts:
        bench_mesh(args.mesh_hosts, args.rounds)
    if not args.skip_profiles:
        bench_profiles(args.steps, args.warmup, args.slow_factor, args.host_cpu)


if __name__ == "__main__":
    main()
