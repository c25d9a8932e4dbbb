"""Live membership benchmark: what a host joining or leaving a running run costs, live
(trainer/membership/) against today's restart path, on the same run, hosts and schedule.

Each round runs two runs of the same training (simple_cnn on synthetic data, or the tiny LM with
``--workload lm``), interleaved, on named local hosts h0, h1, h2 (one rank each, one thread per
rank, as tests/trainer/membership_runs.py starts them; the join goes through the trainer-level
join, a joiner launched with ``CORRAL_JOIN``, as tests/trainer/scenarios/test_live_membership.py
does;
``corral join`` adds its check, push and launch over SSH before that). Both runs checkpoint
every ``--checkpoint-every`` steps and go through the same three changes:

1. **join** of h3 after step ``--join-at``: live, the joiner's own launch and the state sent
   from rank 0 at a step boundary; restart, every rank stopped (SIGTERM: the run stops after
   the current step and checkpoints it) and the four launched again with ``--resume``;
2. **planned leave** of h3 after ``--leave-at`` (and at least ``SETTLE`` steps after the join
   landed): live, ``RunLayout.leave_request`` (what ``corral leave`` writes); restart, stop
   and launch the three again with ``--resume``;
3. **killed host**: h2's rank SIGKILLed after the first step ``>= --kill-at`` that lies half a
   checkpoint interval past a checkpoint (the mean loss of a uniformly timed kill): live, the
   survivors notice and redo the interrupted step; restart, the survivors fail, and h0 and h1
   are launched again with ``--resume`` from the newest checkpoint.

Every figure is read from the runs' events: the trigger is the bench's clock just before it
acts (the same clock as the events' ``t``), then

- ``to step``: from the trigger to the survivors' next completed step (a join: to the joiner's
  first completed step); live, the ``membership`` event's ``seconds_to_step`` is shown beside;
- ``lost``: the time the run lost: from the trigger to the completion of the ``AHEAD``-th step
  past the steps done at the trigger, less ``AHEAD`` normal steps (rank 0's median ``step_s``
  before the trigger); redone steps count in it;
- ``redone``: steps run again (live: the event's ``redone_steps``; restart: steps done since
  the checkpoint resumed from, plus the step a kill interrupted);
- ``state``: bytes a joiner received (live: the event's ``state_bytes``; restart: the
  checkpoint file every rank loads).

The restart path here is the trainer's relaunch only: corral's own restart adds noticing the
loss (torchrun's agent, seconds), the pre-flight check and the push, so its figures are a lower
bound and the ratios conservative. Goals (issue 61): a leave costs <= 5 s + 2 steps; every live
change loses >= 10x less than the restart path. A plot of cluster throughput over time through
the three changes, both paths (first round), is written with ``--plot`` (needs matplotlib).

    python bench/membership.py [--rounds N] [--workload cnn|lm] [--device cpu|cuda]
                               [--json PATH] [--plot PATH]
    python bench/membership.py --ddp-script [--rounds N] [--leave-at S]  # bench/membership_ddp.py
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "trainer")]

from membership_runs import LiveRun, live_run  # noqa: E402

from bench._common import causal_lm_task, markdown_table  # noqa: E402
from bench.membership_ddp import ddp_script_main  # noqa: E402
from trainer.membership.contract import MEMBERSHIP_PORT_ENV  # noqa: E402
from trainer.run_layout import RunLayout  # noqa: E402

HOSTS = ("h0", "h1", "h2")
JOINER = "h3"
AHEAD = 3
"""Steps past the trigger whose completion ends ``lost`` (a change lands within two)."""
SETTLE = 5
"""Steps between one change landing and the next trigger."""
SMOOTH = 9
"""Steps in the plot's running median."""
GAP_S = 5.0
"""A stretch with no step longer than this breaks the plot's throughput line."""
WAIT_S = 300.0
"""The longest any one wait of the bench lasts (a slower change is a failure)."""


@dataclass(frozen=True)
class Cost:
    """One change's cost in one run, read from its events."""

    change: str
    """``join``, ``leave`` (planned) or ``kill``."""
    path: str
    """``live`` or ``restart``."""
    at_step: int
    """Steps rank 0 had completed at the trigger."""
    to_step_s: float
    event_s: float | None
    """Live: the ``membership`` event's ``seconds_to_step`` (from the loss seen)."""
    lost_s: float
    redone: int
    state_bytes: int
    step_s: float
    """Rank 0's median step time before the trigger."""


class StaticRun(LiveRun):
    """The same ranks without a membership store: today's run, which a change restarts."""

    def _env(self, host: str, rank: int, world: int) -> dict[str, str]:
        env = super()._env(host, rank, world)
        env.pop(MEMBERSHIP_PORT_ENV)
        return env

    def stop(self) -> None:
        """SIGTERM every rank, as ``corral stop`` does: they stop after the step and checkpoint."""
        for proc in self.ranks:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        self.wait_exit()

    def wait_exit(self) -> None:
        deadline = time.monotonic() + WAIT_S
        for proc in self.ranks:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))


def steps(run_dir: Path, member: int) -> list[dict[str, Any]]:
    """``member``'s step events, in file order (a resumed run's steps follow its first's)."""
    path = Path(RunLayout(run_dir).events(member))
    if not path.exists():
        return []
    lines = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [e for e in lines if e["event"] == "step"]


def wait_for(run: LiveRun, what: str, condition: Callable[[], bool]) -> None:
    run.wait_for(what, condition, timeout=WAIT_S)


def done_by(run_dir: Path, t: float) -> tuple[int, float]:
    """Steps rank 0 had completed at ``t`` and its median step time until then."""
    before = [e for e in steps(run_dir, 0) if e["t"] <= t]
    return before[-1]["step"], statistics.median(e["step_s"] for e in before[-20:])


def step_t(run_dir: Path, member: int, step: int, after: float) -> float | None:
    """When ``member`` last completed ``step`` after ``after`` (None: not yet)."""
    times = [e["t"] for e in steps(run_dir, member) if e["t"] > after and e["step"] == step]
    return times[-1] if times else None


def first_step(run_dir: Path, member: int, after: float) -> float:
    return min(e["t"] for e in steps(run_dir, member) if e["t"] > after)


def cost(change: str, path: str, run: LiveRun, t0: float, *, first: float, redone: int,
         state_bytes: int, event_s: float | None = None, boundary: int | None = None) -> Cost:
    """The cost of a change triggered at ``t0`` whose first completed step (of the survivors or
    the joiner) was at ``first``, from rank 0's events (waits for the ``AHEAD``-th step).
    ``lost`` counts from the trigger, or from the step ``boundary`` where a change that costs
    the others nothing before it (a live join: the joiner starts beside them) took place."""
    run_dir = run.run_dir
    at, _ = done_by(run_dir, t0)
    start, since = (at, t0) if boundary is None else (boundary, step_t(run_dir, 0, boundary, t0))
    assert since is not None  # the boundary's step completed before the change was reported
    _, step_s = done_by(run_dir, since)
    end = start + AHEAD
    wait_for(run, f"{path} {change}: step {end}",
             lambda: step_t(run_dir, 0, end, since) is not None)
    lost = (step_t(run_dir, 0, end, since) or since) - since - AHEAD * step_s
    return Cost(change, path, at, first - t0, event_s, lost, redone, state_bytes, step_s)


def kill_step(args: argparse.Namespace, now: int) -> int:
    """The first step >= ``--kill-at`` and ``now + SETTLE`` half an interval past a checkpoint."""
    every, step = args.checkpoint_every, max(args.kill_at, now + SETTLE)
    return step + (every // 2 - step % every) % every


def new_generation(event: dict[str, Any], run_dir: Path, t0: float) -> float:
    """When rank 0 completed the first step of the generation ``event`` started."""
    t = step_t(run_dir, 0, event["step"] + 1, t0)
    assert t is not None  # the event is written after that step
    return t


def run_live(args: argparse.Namespace, run_dir: Path, flags: Sequence[str]) -> list[Cost]:
    costs: list[Cost] = []
    with live_run(run_dir, flags, HOSTS) as run:
        def landed(change: str, cause: str | None = None) -> Callable[[], bool]:
            return lambda: any(e["change"] == change and e.get("cause") == cause
                               and e.get("seconds_to_step") is not None
                               for e in run.membership())

        def event(change: str, cause: str | None = None) -> dict[str, Any]:
            return next(e for e in run.membership()
                        if e["change"] == change and e.get("cause") == cause)

        wait_for(run, "join step", lambda: run.steps_done() >= args.join_at)
        t0 = time.time()
        run.join(JOINER)
        wait_for(run, "h3 joined", landed("joined"))
        wait_for(run, "the joiner's first step", lambda: bool(steps(run_dir, 3)))
        joined = event("joined")
        costs.append(cost("join", "live", run, t0, first=first_step(run_dir, 3, t0),
                          redone=0, state_bytes=joined["state_bytes"],
                          event_s=joined["seconds_to_step"], boundary=joined["step"]))
        leave_at = max(args.leave_at, joined["step"] + SETTLE)
        wait_for(run, "leave step", lambda: run.steps_done() >= leave_at)
        t0 = time.time()
        run.ask_leave(JOINER)
        wait_for(run, "h3 left", landed("left", "asked"))
        left = event("left", "asked")
        costs.append(cost("leave", "live", run, t0, first=new_generation(left, run_dir, t0),
                          redone=left["redone_steps"], state_bytes=0,
                          event_s=left["seconds_to_step"]))
        kill_at = kill_step(args, left["step"])
        wait_for(run, "kill step", lambda: run.steps_done() >= kill_at)
        t0 = time.time()
        run.kill(2)
        wait_for(run, "h2 lost", landed("left", "ranks_died"))
        lost = event("left", "ranks_died")
        costs.append(cost("kill", "live", run, t0, first=new_generation(lost, run_dir, t0),
                          redone=lost["redone_steps"], state_bytes=0,
                          event_s=lost["seconds_to_step"]))
        run.finish(timeout=WAIT_S)
    return costs


def run_restart(args: argparse.Namespace, run_dir: Path, flags: Sequence[str],
                live: Sequence[Cost]) -> list[Cost]:
    """Today's path through the changes the live run went through, at the same steps."""
    costs: list[Cost] = []
    resumed = (*flags, "--resume")
    runs = [StaticRun(run_dir, tuple(flags), HOSTS)]
    try:
        runs[0].start()
        plan = [("join", (*HOSTS, JOINER)), ("leave", HOSTS), ("kill", HOSTS[:2])]
        for (change, hosts), at in zip(plan, live, strict=True):
            run = runs[-1]
            reached = partial(lambda r, n: r.steps_done() >= n, run, at.at_step)
            wait_for(run, f"{change} step", reached)
            t0 = time.time()
            if change == "kill":
                run.kill(2)  # the survivors fail too: today's path has no way on
                run.wait_exit()
            else:
                run.stop()
            done, ckpt = run.steps_done(), newest_checkpoint(run_dir)
            relaunch = time.time()
            runs.append(StaticRun(run_dir, resumed, hosts))
            runs[-1].start()
            joiner = 3 if change == "join" else 0
            wait_for(runs[-1], "first step after the relaunch",
                     partial(lambda j, t: any(e["t"] > t for e in steps(run_dir, j)), joiner,
                             relaunch))
            interrupted = 1 if change == "kill" else 0
            costs.append(cost(change, "restart", runs[-1], t0,
                              first=first_step(run_dir, joiner, relaunch),
                              redone=done + interrupted - ckpt[0],
                              state_bytes=ckpt[1] if change == "join" else 0))
        runs[-1].finish(timeout=WAIT_S)
    finally:
        for run in runs:
            run.stop_all()
    return costs


def newest_checkpoint(run_dir: Path) -> tuple[int, int]:
    """The step and size in bytes of the run's newest checkpoint (what a resume loads)."""
    files = sorted(Path(run_dir).glob("checkpoints/step-*.pt"))
    if not files:
        return 0, 0
    return int(files[-1].stem.split("-")[1]), files[-1].stat().st_size


def training_flags(args: argparse.Namespace, folder: Path) -> list[str]:
    what = (causal_lm_task(folder) if args.workload == "lm" else
            ["--model", "simple_cnn", "--dataset", "synthetic_image", "--samples", "4096",
             "--momentum", "0.9"])
    return [*what, "--global-batch", str(args.global_batch), "--steps", str(args.steps),
            "--policy", "dynamic", "--seed", "7", "--checkpoint-every",
            str(args.checkpoint_every), "--device", args.device, "--backend", args.backend]


def summary(costs: list[Cost]) -> str:
    """Medians per change and path, and the restart / live ratio of lost time."""
    rows = []
    for change in ("join", "leave", "kill"):
        by = {p: [c for c in costs if c.change == change and c.path == p]
              for p in ("live", "restart")}
        med = {p: {f: statistics.median(getattr(c, f) for c in cs)
                   for f in ("to_step_s", "lost_s", "redone", "state_bytes", "step_s")}
               for p, cs in by.items()}
        events = [c.event_s for c in by["live"] if c.event_s is not None]
        for p in ("live", "restart"):
            m = med[p]
            rows.append([change, p, len(by[p]), f"{m['to_step_s']:.2f}",
                         f"{statistics.median(events):.2f}" if p == "live" and events else "-",
                         f"{m['lost_s']:.2f}", f"{m['redone']:g}", f"{m['state_bytes']:,.0f}",
                         f"{m['step_s']:.3f}",
                         f"{med['restart']['lost_s'] / max(m['lost_s'], 1e-3):.1f}x"
                         if p == "live" else ""])
    return markdown_table(["change", "path", "n", "to step s", "event s", "lost s", "redone",
                           "state bytes", "step s", "restart/live lost"], rows)


def plot(folder: Path, out: Path, global_batch: int, triggers: dict[str, list[Cost]]) -> None:
    """Cluster samples/s (rank 0's step events) over time, both paths, changes marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plot: matplotlib is not installed)")
        return
    fig, axes = plt.subplots(2, 2, figsize=(12, 6), sharex=True)
    for (rate_ax, step_ax), path in zip(axes, ("live", "restart"), strict=True):
        events = steps(folder / f"{path}-0", 0)
        t0 = events[0]["t"]
        times = [e["t"] - t0 for e in events]
        rates = [global_batch / e["step_s"] for e in events]
        rate_ax.plot(times, rates, ".", markersize=3, color="lightsteelblue")
        half = SMOOTH // 2  # a running median: the loaded machine's noise, not the change
        smooth = [statistics.median(rates[max(0, i - half):i + half + 1])
                  for i in range(len(rates))]
        # No line across a stop: a stretch with no step is no throughput at all.
        cut = [i for i in range(1, len(times)) if times[i] - times[i - 1] > GAP_S]
        for lo, hi in zip([0, *cut], [*cut, len(times)], strict=True):
            rate_ax.plot(times[lo:hi], smooth[lo:hi], color="navy", linewidth=1)
        step_ax.plot(times, [e["step"] for e in events], ".", markersize=2, color="navy")
        for ax in (rate_ax, step_ax):
            for c in triggers[path]:
                at = next(e["t"] for e in events if e["step"] == c.at_step) - t0
                ax.axvline(at, color="grey", linestyle="--", linewidth=0.8)
                ax.annotate(c.change, (at, ax.get_ylim()[1] * 0.92), fontsize=8)
        rate_ax.set_title(f"{path}: cluster samples/s (running median of {SMOOTH} steps)",
                          fontsize=10)
        step_ax.set_title(f"{path}: steps completed (a drop: steps redone)", fontsize=10)
    for ax in axes[1]:
        ax.set_xlabel("seconds since the first step")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"plot: {out}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workload", choices=("cnn", "lm"), default="cnn")
    p.add_argument("--global-batch", type=int, default=48)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--join-at", type=int, default=10)
    p.add_argument("--leave-at", type=int, default=40)
    p.add_argument("--kill-at", type=int, default=75)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--backend", choices=("gloo", "nccl"), default="gloo",
                   help="gloo (default): several ranks on one GPU need it; nccl: one GPU each")
    p.add_argument("--run-root", type=Path, help="keep the runs here (default: a temp dir)")
    p.add_argument("--json", type=Path, help="write every round's costs here")
    p.add_argument("--plot", type=Path, help="throughput over time through the changes (PNG)")
    p.add_argument("--ddp-script", action="store_true", help="a user's DDP script with "
                   "corral's helper instead: its leave and join (bench/membership_ddp.py)")
    p.add_argument("--epochs", type=int, default=10, help="--ddp-script: 20 steps each")
    p.add_argument("--pause", type=float, default=0.3, help="--ddp-script: seconds a step")
    args = p.parse_args()
    print(f"load before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="corral-membership-") as tmp:
        folder = args.run_root or Path(tmp)
        if args.ddp_script:
            print(ddp_script_main(args, folder))
            return 0
        flags = training_flags(args, folder)
        costs: list[Cost] = []
        for i in range(args.rounds):
            live = run_live(args, folder / f"live-{i}", flags)
            restart = run_restart(args, folder / f"restart-{i}", flags, live)
            for c in (*live, *restart):
                print(f"  round {i + 1}: {c.path:7} {c.change:5} at step {c.at_step:3}: "
                      f"to step {c.to_step_s:6.2f} s, lost {c.lost_s:6.2f} s, "
                      f"redone {c.redone}", flush=True)
            costs += [*live, *restart]
            if i == 0 and args.plot:
                plot(folder, args.plot, args.global_batch, {"live": live, "restart": restart})
    print(f"load after: {os.getloadavg()}")
    print(summary(costs))
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in costs], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
