"""``exchange = "local"`` (approximate) against exact data parallelism, interleaved.

Part 1, quality and bytes (any machine, local ranks under torch's launcher, one island per
rank): a small CNN (simple_cnn on synthetic images) and a tiny causal LM (``python -m
trainer.tiny_lm``, full fine-tune: ``lora_r=0``), the same seed and the same samples, exact and
local at several round lengths H; every configuration once per round, rounds interleaved
(order reversed every other round). A local run's global batch is the exact run's over the
islands, for as many more steps (``--inner-batch share``, the default): the same samples, and
every island takes as many optimizer steps as the exact run, each on its share of the exact
run's batch; ``--inner-batch global`` gives each island the exact run's whole batch per inner
step (so 1/islands of its optimizer steps at equal samples). Reported: the final held-out
loss against the exact run's (median over rounds; goal within 3 %), bytes exchanged per sample
(exact: the ring all-reduce of the gradient every step; local: the round events'; goal >= 50x
fewer), wall throughput, and plots of held-out loss against samples and against wall time
(PNG, needs matplotlib). ``--lm-shape 192,576,4`` raises the LM to 2.0M parameters (one float32
exchange over 50 Mbit/s then takes seconds); ``--settings`` picks the outer_compression[+overlap]
settings run at every H; ``--outer`` runs them all again at each other outer step (outer_lr,
outer_momentum); ``--recorded DIR`` reports and plots the runs a stopped bench left.

Part 2, shaped links (``--shaped``, bench/lowcomm_shaped.py): network-namespace hosts (one
behind 50 Mbit/s Wi-Fi, the others on 1 Gbit/s): throughput of exact (which benches the slow
host) and local (each ``--shaped-settings`` setting) against the sum of the hosts' solo
throughputs (goal local >= 0.9x), and local's exposed exchange (goal <= 5 % of the round).
Needs root, ``ip netns``, sshd and tc; without them it says why and exits 2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import REPO, bare_env
from bench.lowcomm_workloads import lm_shape, workload_flags

NPROC = 2


def with_value(flags: list[str], option: str, value: int) -> list[str]:
    """``flags`` with ``option``'s value replaced."""
    at = flags.index(option) + 1
    return [*flags[:at], str(value), *flags[at + 1:]]


def local_flags(flags: list[str], batch: int, inner_batch: str) -> tuple[list[str], int]:
    """A local run's flags and global batch: under ``share``, the exact run's batch over the
    islands for as many more steps (the same samples; evaluated at the same samples)."""
    if inner_batch == "global":
        return flags, batch
    steps = int(flags[flags.index("--steps") + 1]) * NPROC
    every = int(flags[flags.index("--eval-every") + 1]) * NPROC
    shared = with_value(with_value(with_value(flags, "--global-batch", batch // NPROC),
                                   "--steps", steps), "--eval-every", every)
    return shared, batch // NPROC


def mode_flags(mode: str) -> list[str]:
    """A mode's trainer flags: ``exact``, or ``H<steps>/<compression>[+overlap][@LR,MOMENTUM]``
    (e.g. ``H64/int8+overlap``, ``H64/int4@1.0,0.0``) for a local run; ``@`` names its outer
    step (the trainer's default without it)."""
    if mode == "exact":
        return []
    mode, _, outer = mode.partition("@")
    rounds, _, setting = mode.partition("/")
    compression, _, overlap = (setting or "none").partition("+")
    outer_flags: list[str] = []
    if outer:
        lr, momentum = outer.split(",")
        outer_flags = ["--outer-lr", lr, "--outer-momentum", momentum]
    return ["--exchange", "local", "--round-steps", rounds[1:],
            "--islands", ",".join(map(str, range(NPROC))), "--outer-compression", compression,
            *(["--outer-overlap"] if overlap else []), *outer_flags]


def outer_steps(text: str) -> str:
    """``--outer``: space-separated ``LR,MOMENTUM`` pairs, checked before anything runs."""
    for pair in text.split():
        try:
            lr, momentum = (float(v) for v in pair.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{pair!r} is not LR,MOMENTUM (e.g. 1.0,0.0)") from None
        if not (lr > 0 and 0 <= momentum < 1):
            raise argparse.ArgumentTypeError(
                f"{pair!r}: the outer lr must be > 0 and its momentum in [0, 1)")
    return text


def local_modes(h: str, settings: str, outer: str | None) -> list[str]:
    """Every local mode: each setting at each H, under each ``--outer`` step if given (the
    trainer's default outer step, unlabelled, if not)."""
    steps = [f"@{pair}" for pair in outer.split()] if outer else [""]
    return [f"H{rounds}/{setting}{step}" for step in steps for rounds in h.split(",")
            for setting in settings.split(",")]


def run_once(flags: list[str], mode: str, run_dir: Path) -> dict[str, Any]:
    """One run on NPROC local ranks; its eval curve, wall time and round events."""
    extra = mode_flags(mode)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={NPROC}", "-m", "trainer", "--threads", "1",
           "--resources-every", "0", "--checkpoint-every", "0", *flags, *extra,
           "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd, cwd=REPO, env=bare_env(1), capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return read_run(run_dir)


def read_run(run_dir: Path) -> dict[str, Any]:
    """A finished run's eval curve, wall time and round events (its rank 0's events)."""
    events = [json.loads(line) for line in
              (run_dir / "metrics" / "rank-0.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["event"] == "start")
    first_t = start["t"]
    batch = start["global_batch"]  # x-axis in samples, whatever the mode's batch
    evals = [(e["step"] * batch, e["t"] - first_t, e["loss"])
             for e in events if e["event"] == "eval"]
    steps = [e for e in events if e["event"] == "step"]
    rounds = [e for e in events if e["event"] == "round"]
    wall = steps[-1]["t"] - first_t
    return {"evals": evals, "wall": wall, "rounds": rounds, "batch": batch,
            "samples": steps[-1]["step"] * batch}


def parameter_count(run_dir: Path) -> int:
    """Trained parameters of a finished run (its final model's float tensors)."""
    import torch

    final = run_dir / "final"
    files = list(final.glob("*.safetensors"))
    if files:
        from safetensors.torch import load_file

        return sum(t.numel() for f in files for t in load_file(str(f)).values())
    state = torch.load(final / "model.pt", map_location="cpu", weights_only=True)
    return sum(t.numel() for t in state.values() if t.is_floating_point())


def bytes_per_sample(mode: str, result: dict[str, Any], params: int) -> float:
    """Bytes each participant sends per sample trained: exact, the ring all-reduce of the
    float32 gradient every step; local, what the round events say."""
    if mode == "exact":
        return 2 * (NPROC - 1) / NPROC * params * 4 / result["batch"]
    rounds = result["rounds"]
    sent = sum(r["exchanged_bytes"] for r in rounds)
    samples = sum(sum(r["inner_steps"]) for r in rounds) * result["batch"]
    return sent / samples


def parser() -> argparse.ArgumentParser:
    """The bench's options (part 1, part 2 and the recorded report)."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--workloads", default="cnn,lm")
    p.add_argument("--h", default="8,32,64", help="round lengths to compare (inner steps)")
    p.add_argument("--settings", default="none,int8,int4,none+overlap,int8+overlap,int4+overlap",
                   help="local runs' outer_compression[+overlap] settings, each at every H")
    p.add_argument("--outer", type=outer_steps, default=None, metavar="'LR,MOMENTUM ...'",
                   help="local runs' outer steps, space-separated outer_lr,outer_momentum pairs "
                        "(e.g. '1.0,0.0 0.7,0.5'), each at every H and setting, labelled "
                        "H64/int4@1.0,0.0 (default: the trainer's outer step, unlabelled)")
    p.add_argument("--inner-batch", choices=("share", "global"), default="share",
                   help="a local island's inner batch: its share of the exact run's (default) "
                        "or all of it")
    p.add_argument("--lm-shape", type=lm_shape, default=None, metavar="H,I,L",
                   help="the LM's hidden size, MLP width and layers (default the tiny LM's "
                        "64,176,4: 234k parameters; 192,576,4: 2.0M, one float32 exchange "
                        "over 50 Mbit/s takes seconds)")
    p.add_argument("--lm-steps", type=int, default=768, help="the LM's exact run's steps")
    p.add_argument("--plots", type=Path, default=REPO / "bench" / "plots")
    p.add_argument("--shaped", action="store_true", help="part 2 (netns hosts, shaped links)")
    p.add_argument("--steps", type=int, default=900, help="part 2: global steps of each run")
    p.add_argument("--host-cpu", type=float, default=None, metavar="CORES",
                   help="part 2: every host its own CPU share, CORES of a core (a cgroup CFS "
                        "quota, as bench/many_hosts.py --host-cpu), so that three hosts on "
                        "fewer cores can reach the sum of what each does alone")
    p.add_argument("--shaped-workload", choices=("cnn", "lm"), default="cnn",
                   help="part 2: simple_cnn, or the LM of --lm-shape (B=8 sequences of 64)")
    p.add_argument("--shaped-settings", default="int8",
                   help="part 2: one local run per outer_compression[+overlap] setting, "
                        "each round (the round length chosen by the run)")
    p.add_argument("--recorded", type=Path, default=None, metavar="DIR",
                   help="report and plot the runs already in DIR (a scratch folder this "
                        "bench left, LABEL-MODE-ROUND folders), running nothing")
    return p


def main() -> int:
    args = parser().parse_args()
    if args.recorded:
        return recorded(args.recorded, args.plots)
    if args.shaped:
        from bench.lowcomm_shaped import shaped_main

        return shaped_main(args)
    modes = ["exact", *local_modes(args.h, args.settings, args.outer)]
    scratch = Path(tempfile.mkdtemp(prefix="corral-lowcomm-"))
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    params: dict[str, int] = {}
    for workload in args.workloads.split(","):
        flags, batch = workload_flags(workload, scratch, args.quick, args.lm_shape,
                                      args.lm_steps)
        local, _ = local_flags(flags, batch, args.inner_batch)
        shape = args.lm_shape
        label = (f"{workload}-{shape.hidden_size}-{shape.intermediate_size}-{shape.layers}"
                 if workload == "lm" and shape else workload)
        for r in range(args.rounds):
            order = modes if r % 2 == 0 else modes[::-1]
            for mode in order:
                run_dir = scratch / f"{label}-{mode.replace('/', '-')}-{r}"
                started = time.perf_counter()
                result = run_once(flags if mode == "exact" else local, mode, run_dir)
                print(f"# {label} {mode} round {r}: eval loss {result['evals'][-1][2]:.4f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
                results.setdefault((label, mode), []).append(result)
                params.setdefault(label, parameter_count(run_dir))
        report(label, modes, results, params[label])
        plot(label, modes, results, params[label], args.plots)
    return 0


def folder_mode(name: str) -> tuple[str, str]:
    """A run folder's workload label and mode (``main`` names it LABEL-MODE-ROUND, the mode's
    ``/`` a ``-``): ``lm-192-576-4-H64-int4@1.0,0.0-0`` is ``lm-192-576-4``'s
    ``H64/int4@1.0,0.0``."""
    if "-exact-" in name:
        return name.partition("-exact-")[0], "exact"
    label, _, rest = name.partition("-H")
    return label, "H" + rest.rsplit("-", 1)[0].replace("-", "/", 1)


def recorded(scratch: Path, plots: Path) -> int:
    """Report and plot finished runs left in ``scratch`` (e.g. a bench stopped part way)."""
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    labels: dict[str, list[str]] = {}
    for run_dir in sorted(scratch.iterdir()):
        if not (run_dir / "final").is_dir():
            continue  # unfinished, or not a run
        label, mode = folder_mode(run_dir.name)
        results.setdefault((label, mode), []).append(read_run(run_dir))
        labels.setdefault(label, [])
        if mode not in labels[label]:
            labels[label].append(mode)
    for label, modes in labels.items():
        modes.sort(key=lambda m: (m != "exact", m))
        params = parameter_count(next(d for d in scratch.iterdir()
                                      if d.name.startswith(f"{label}-exact-")))
        report(label, modes, results, params)
        plot(label, modes, results, params, plots)
    return 0


def report(workload: str, modes: list[str], results: dict[tuple[str, str], list[Any]],
           params: int) -> None:
    """The markdown table of one workload (medians over rounds)."""
    exact = results[(workload, "exact")]
    exact_loss = statistics.median(r["evals"][-1][2] for r in exact)
    exact_bytes = bytes_per_sample("exact", exact[0], params)
    print(f"\n{workload}: {params:,} parameters, {NPROC} islands of one rank, "
          f"{exact[0]['samples']} samples\n")
    print("| mode | B | final eval loss (median) | vs exact | bytes/sample | fewer bytes | "
          "samples/s (wall) | exposed exchange |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in modes:
        runs = results[(workload, mode)]
        loss = statistics.median(r["evals"][-1][2] for r in runs)
        sent = bytes_per_sample(mode, runs[0], params)
        speed = statistics.median(r["samples"] / r["wall"] for r in runs)
        losses = ", ".join(f"{r['evals'][-1][2]:.4f}" for r in runs)
        print(f"| {mode} | {runs[0]['batch']} | {loss:.4f} ({losses}) | "
              f"{loss / exact_loss - 1:+.1%} | {sent:,.0f} | {exact_bytes / sent:.0f}x | "
              f"{speed:.1f} | {exposed_share(runs):.1%} |")


def exposed_share(runs: list[dict[str, Any]]) -> float:
    """The median over runs of the exchange's exposed time over the rounds' time."""
    shares = [sum(e["exchange_s"] for e in r["rounds"]) / sum(e["round_s"] for e in r["rounds"])
              for r in runs if r["rounds"]]
    return statistics.median(shares) if shares else 0.0


def plot(workload: str, modes: list[str], results: dict[tuple[str, str], list[Any]],
         params: int, folder: Path) -> None:
    """Held-out loss against samples and against wall time, every mode (first round), and the
    final loss's gap to exact against bytes per sample (a line per outer step)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plots: matplotlib is not installed)")
        return
    folder.mkdir(parents=True, exist_ok=True)
    fig, (by_step, by_time, by_bytes) = plt.subplots(1, 3, figsize=(15, 4))
    for mode in modes:
        evals = results[(workload, mode)][0]["evals"]
        by_step.plot([s for s, _, _ in evals], [v for _, _, v in evals], marker=".", label=mode)
        by_time.plot([t for _, t, _ in evals], [v for _, _, v in evals], marker=".", label=mode)
    plot_gaps(by_bytes, workload, modes, results, params)
    by_step.set_xlabel("samples")
    by_time.set_xlabel("wall seconds (unshaped loopback)")
    for ax in (by_step, by_time):
        ax.set_ylabel("held-out loss")
        ax.legend()
    fig.suptitle(f"{workload}: exact vs local (approximate)")
    fig.tight_layout()
    out = folder / f"lowcomm-{workload}.png"
    fig.savefig(out, dpi=90)
    print(f"plot: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")


def plot_gaps(by_bytes: Any, workload: str, modes: list[str],
              results: dict[tuple[str, str], list[Any]], params: int) -> None:
    """The final loss's gap to exact against bytes per sample, a line per outer step."""
    exact_loss = statistics.median(r["evals"][-1][2] for r in results[(workload, "exact")])
    lines: dict[str, list[tuple[float, float, str]]] = {}  # outer step -> (bytes, gap %, mode)
    for mode in modes[1:] if modes[0] == "exact" else modes:
        runs = results[(workload, mode)]
        gap = statistics.median(r["evals"][-1][2] for r in runs) / exact_loss - 1
        setting, _, outer = mode.partition("@")
        lines.setdefault(f"outer {outer or 'default'}", []).append(
            (bytes_per_sample(mode, runs[0], params), 100 * gap, setting))
    for outer, points in lines.items():  # one line per outer step, its settings by bytes
        points.sort()
        by_bytes.plot([b for b, _, _ in points], [g for _, g, _ in points], marker="o",
                      label=outer)
        for sent, gap, setting in points:
            by_bytes.annotate(setting, (sent, gap), fontsize=7)
    by_bytes.axhline(3, color="grey", linestyle=":")  # the goal: within 3 % of exact
    by_bytes.set_xscale("log")
    by_bytes.set_xlabel("bytes per sample (each island sends)")
    by_bytes.set_ylabel("final eval loss vs exact (%)")
    by_bytes.legend()


if __name__ == "__main__":
    sys.exit(main())
