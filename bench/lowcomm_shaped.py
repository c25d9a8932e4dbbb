"""``bench/lowcomm.py --shaped``: ``exchange = "local"`` against exact over shaped links.

Three network-namespace hosts with their own sshd (tests/remote/netns.py), one rank and one
thread each: n1 and n2 on 1 Gbit/s, n3 behind 50 Mbit/s Wi-Fi (its rate and 1 % loss; 5 ± 2 ms
of delay too where the kernel has netem). The same run (same seed, data and batch: simple_cnn,
or with ``--shaped-workload lm`` the LM of ``--lm-shape``) several ways, every way once per
round, rounds interleaved (order reversed every other round): each host alone (its solo
throughput), the three hosts exact (the balancer benches n3), and the three hosts local once
per ``--shaped-settings`` setting (``outer_compression[+overlap]``; each host an island, the
round length chosen by the run). Reported: medians over rounds of samples/s after the warm-up
(exact: the global batch over the median step time past the balancer's first decision; local:
the samples of the rounds after the first over their seconds), each local setting against the
sum of the solo throughputs (goal >= 0.9x) and against exact, and its exposed exchange's share
of those rounds (goal <= 5 %).

The hosts share this machine's cores: three ranks on fewer than three cores cannot reach the
sum of what each does alone, and the output says how many cores there were. ``--host-cpu
CORES`` gives every host a CPU share of its own instead (bench/many_hosts.py's cgroup quota:
0.6 each puts three hosts within two cores), as machines of their own would have.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

RUN = ('{workload}\nsteps = {steps}\ncheckpoint_every = 100000\npolicy = "dynamic"\n'
       'seed = 5\n{extra}')
CNN = 'model = "simple_cnn"\ndataset = "synthetic_image"\nsamples = 4096\nglobal_batch = 48'
LM = ('task = "causal_lm"\nglobal_batch = 8\noptimizer = "adamw"\nlr = 0.002\n'
      'task_options = {{ model = "{model}", data = "{data}", seq_len = 64, lora_r = 0 }}')
SOLO_SHARE = 3
"""The solo and exact runs take 1/SOLO_SHARE and 1/2 of the local runs' steps: their
throughput is the median step after the warm-up, which needs fewer steps than rounds do."""
WARMUP_STEPS = 12
"""Exact: steps before the balancer's first decision (at step 10) and its settling."""


def _events(run_dir: Path) -> list[dict[str, Any]]:
    path = next(run_dir.rglob("metrics/rank-0.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def samples_per_s(run_dir: Path) -> tuple[float, float, str]:
    """The run's steady throughput, its exposed exchange's share of the rounds (0 for exact)
    and a note (who sat out, or the round length)."""
    events = _events(run_dir)
    batch = next(e for e in events if e["event"] == "start")["global_batch"]
    rounds = [e for e in events if e["event"] == "round"]
    if rounds:  # local: the rounds after the first (which chooses the round length)
        later = rounds[1:] or rounds
        samples = sum(sum(r["inner_steps"]) for r in later) * batch
        seconds = sum(r["round_s"] for r in later)
        exposed = sum(r["exchange_s"] for r in later) / seconds
        sent = sum(r["exchanged_bytes"] for r in later)
        chosen = [r["round_steps"] for r in rounds[:-1]] or [rounds[-1]["round_steps"]]
        note = (f"H={'/'.join(map(str, dict.fromkeys(chosen)))}, {len(rounds)} rounds, "
                f"{sent / samples:,.0f} B/sample")
        return samples / seconds, exposed, note
    steps = [e for e in events if e["event"] == "step" and e["step"] > WARMUP_STEPS]
    last = [e for e in events if e["event"] == "rebalance"]
    split = last[-1]["split"] if last else None
    return batch / statistics.median(e["step_s"] for e in steps), 0.0, f"split {split}"


def _run(netns: Any, box: Any, root: Path, *, hosts: list[str], run: str
         ) -> tuple[float, float, str]:
    before = set((root / "runs").glob("*"))
    box.write_cluster_toml(sys.executable, run=run, order=hosts)
    done = netns.corral(box, "run", timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"corral run on {hosts} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    run_dir = next(p for p in (root / "runs").glob("*") if p not in before)
    return samples_per_s(run_dir)


def _way_run(way: str, args: Any, workload: str) -> tuple[list[str], str]:
    """A way's hosts and ``[run]`` section: ``nK alone``, ``exact`` or ``local SETTING``."""
    if way.endswith("alone"):
        hosts, steps, extra = [way.split()[0]], args.steps // SOLO_SHARE, ""
    elif way == "exact":
        hosts, steps, extra = ["n1", "n2", "n3"], args.steps // 2, ""
    else:
        compression, _, overlap = way.split()[1].partition("+")
        hosts, steps = ["n1", "n2", "n3"], args.steps
        extra = (f'exchange = "local"\nouter_compression = "{compression}"\n'
                 f"outer_overlap = {'true' if overlap else 'false'}\n")
    return hosts, RUN.format(workload=workload, steps=steps, extra=extra)


def _workload(args: Any, scratch: Path) -> tuple[str, str]:
    """The ``[run]`` lines of the workload and its words."""
    if args.shaped_workload == "cnn":
        return CNN, "simple_cnn, B=48"
    from bench.lowcomm import workload_flags

    flags, _ = workload_flags("lm", scratch, False, args.lm_shape)
    options = dict(flags[i + 1].split("=", 1) for i, f in enumerate(flags)
                   if f == "--task-option")
    shape = args.lm_shape
    size = f"{shape.hidden_size},{shape.intermediate_size},{shape.layers}" if shape else "tiny"
    return (LM.format(model=options["model"], data=options["data"]),
            f"LM {size}, B=8 sequences of 64, AdamW")


def shaped_main(args: Any) -> int:
    """Part 2 (see the module); exits 2 where namespace hosts cannot be made."""
    from bench._hosts_cpu import HostsCpuLimit
    from tests.remote import netns
    from tests.remote.netns_links import GIGABIT, WIFI, shape, shaped_as

    reason = netns.unavailable_reason()
    if reason is not None:
        print(f"bench/lowcomm.py --shaped: {reason}", file=sys.stderr)
        return 2
    host_cpu = args.host_cpu
    ways = ["n1 alone", "n2 alone", "n3 alone", "exact",
            *(f"local {s}" for s in args.shaped_settings.split(","))]
    found: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        workload, words = _workload(args, root)
        share = f"each host {host_cpu:g} core" if host_cpu else "the hosts share them"
        print(f"{os.cpu_count()} cores, {share}; n3's link: {shaped_as(WIFI)}; n1, n2: "
              f"{shaped_as(GIGABIT)}; {words}, {args.steps} steps (local)", flush=True)
        box = netns.build(root, hosts=3)
        limit = None
        try:
            for index, link in enumerate((GIGABIT, GIGABIT, WIFI)):
                shape(box, index, link)
            if host_cpu:
                limit = HostsCpuLimit(box, host_cpu)
            for round_index in range(args.rounds):
                order = ways if round_index % 2 == 0 else list(reversed(ways))
                for way in order:
                    hosts, run = _way_run(way, args, workload)
                    value, exposed, note = _run(netns, box, root, hosts=hosts, run=run)
                    found[way].append((value, exposed))
                    print(f"round {round_index + 1}: {way:<18} {value:8.1f} samples/s, "
                          f"exposed {exposed:.1%}  ({note}; load {os.getloadavg()[0]:.1f})",
                          flush=True)
        finally:
            box.close()
            if limit is not None:
                limit.close()
    _summary(found, args.rounds)
    return 0


def _summary(found: dict[str, list[tuple[float, float]]], rounds: int) -> None:
    """Medians over rounds, and every local setting against the solo sum and exact."""
    median = {way: statistics.median(v for v, _ in runs) for way, runs in found.items()}
    solo = sum(median[f"n{i} alone"] for i in (1, 2, 3))
    print(f"medians over {rounds} rounds: " + ", ".join(f"{w} {v:.1f}" for w, v in median.items()))
    print(f"sum of solo {solo:.1f} samples/s; exact / sum of solo {median['exact'] / solo:.2f}")
    for way, runs in found.items():
        if way.startswith("local"):
            exposed = statistics.median(e for _, e in runs)
            print(f"{way}: / sum of solo {median[way] / solo:.2f} (goal >= 0.9), / exact "
                  f"{median[way] / median['exact']:.2f}, exposed exchange {exposed:.1%} of the "
                  f"rounds (goal <= 5 %)")
