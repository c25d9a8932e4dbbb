"""The follower's CPU with MLflow logging on vs off: 6 ranks × 1000 steps of synthetic events.

Each event line goes the way a live follower handles it: appended to the run's local copy
(``CollectedCopy.append``, which hands it on through ``on_line``), parsed into its typed
event and applied to the run model that ``corral run``'s headless follower and the console
render from (``RunModel.apply``). The SSH channel, the monitor and the rendering are left
out, so "off" is a lower bound of a real follower's CPU and the ratio an upper bound.

With MLflow on, the copy also feeds a ``TrackerWriter`` (``remote.records.tracking``) that
writes to a ``sqlite:///`` store from a process of its own. The follower's CPU is this
process's (``time.process_time``); the tracker process's CPU, to the moment it has stored
the last step and the outcome, is printed next to it, and so is opening the tracker (paid
once per follow). Rounds alternate off/on; medians and their ratio are printed (goal: on
<= 1.2 × off).

    python bench/tracking.py               # 6 ranks, 1000 steps, 5 rounds
    python bench/tracking.py --rounds 3 --steps 300
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from console.model.run import RunModel
from remote.api import RankEvent
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.config.exports import TrackingSection
from remote.records.collected import CollectedCopy
from remote.records.runs import RunInfo
from remote.records.scalars import feed_copies
from remote.records.tracking import open_trackers
from trainer.events import (
    EvalEvent,
    RebalanceEvent,
    StartEvent,
    StepEvent,
    event_to_json,
    parse_event,
)
from trainer.run_layout import RunLayout

GOAL = 1.2
HOSTS = ("h0", "h1", "h2")


def synthetic_lines(ranks: int, steps: int) -> list[tuple[str, str, str]]:
    """``(host, path, line)`` of a run: starts, every rank's steps, an evaluation and a
    rebalance every 100 steps, in the order the ranks write them."""
    per_host = max(1, ranks // len(HOSTS))
    host = [HOSTS[min(r // per_host, len(HOSTS) - 1)] for r in range(ranks)]
    path = [RunLayout().events(r) for r in range(ranks)]
    split = (16,) * ranks
    t = 1_700_000_000.0
    lines = [(host[r], path[r], event_to_json(StartEvent(
        t=t, rank=r, world_size=ranks, local_rank=r % per_host, host=host[r], pid=r,
        device="cpu", device_name="cpu", backend="gloo", model="m", dataset="d",
        global_batch=16 * ranks, split=split, policy="dynamic", step=0, total_steps=steps,
        steps_per_epoch=steps, threads=1, slowdown=1.0))) for r in range(ranks)]
    for step in range(1, steps + 1):
        t += 0.1
        if step % 100 == 0:
            lines.append((host[0], path[0], event_to_json(RebalanceEvent(
                t=t, rank=0, step=step, previous=split, split=split, reason="bench",
                predicted_gain=0.01, times=(0.05,) * ranks, policy="dynamic"))))
        for r in range(ranks):
            compute = 0.03 + 0.01 * r
            lines.append((host[r], path[r], event_to_json(StepEvent(
                t=t, rank=r, step=step, epoch=0, local_batch=16, loss=1.0 / step,
                compute_s=compute, step_s=0.09,
                global_loss=1.0 / step if r == 0 else None, lr=0.01 if r == 0 else None))))
        if step % 100 == 0:
            lines.append((host[0], path[0], event_to_json(EvalEvent(
                t=t, rank=0, step=step, samples=100, units=100, loss=1.0 / step,
                accuracy=0.5))))
    return lines


def config_for(root: Path, mlflow: str | None) -> ClusterConfig:
    return ClusterConfig(path=root / "cluster.toml",
                         cluster=ClusterSection(name="bench", run_root=str(root)),
                         hosts=tuple(HostSection(name=h, address="local") for h in HOSTS),
                         tracking=TrackingSection(mlflow=mlflow, log_model=False))


def follow(lines: list[tuple[str, str, str]], root: Path, mlflow: str | None
           ) -> tuple[float, float, float]:
    """CPU seconds to open the trackers and to follow ``lines`` to the end (this process),
    and the tracker process's."""
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    info = RunInfo(run_id="run", cluster="bench", state="running", started=time.time(),
                   hosts=HOSTS)
    copies = {h: CollectedCopy(run_dir, h) for h in HOSTS}
    cpu0 = time.process_time()
    trackers = open_trackers(config_for(root, mlflow), info, run_dir)
    for writer in trackers.writers:  # the store is open before the run is measured
        writer.send_batch()
        while writer.tracker_run is None and not writer.failed:
            time.sleep(0.01)
    cpu1 = time.process_time()
    feed_copies(copies.values(), trackers.writers)
    model = RunModel(cluster_name="bench", hosts=HOSTS, policy="dynamic")
    sizes = dict.fromkeys(HOSTS, 0)
    for host, path, text in lines:
        sizes[host] += len(text) + 1
        event = parse_event(text)  # the stream parses, then copies (remote.run.stream)
        copies[host].append(path, text, sizes[host], event)
        if event is not None:
            model.apply(RankEvent(host=host, event=event))
    for copy in copies.values():
        copy.save()
        copy.close()
    trackers.close("completed")
    trackers.wait()
    followed = time.process_time() - cpu1
    assert not trackers.take_warnings()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    tracker = (children.ru_utime + children.ru_stime - children0.ru_utime - children0.ru_stime)
    return cpu1 - cpu0, followed, tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=6)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    lines = synthetic_lines(args.ranks, args.steps)
    off: list[float] = []
    on: list[float] = []
    opening: list[float] = []
    tracker: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            for mode in (("off", "on") if index % 2 == 0 else ("on", "off")):
                root = Path(tmp) / f"{index}-{mode}"
                uri = f"sqlite:///{root / 'mlflow.db'}" if mode == "on" else None
                opened, followed, elsewhere = follow(lines, root, uri)
                (on if mode == "on" else off).append(followed)
                if mode == "on":
                    opening.append(opened)
                    tracker.append(elsewhere)
                print(f"round {index + 1} {mode:>3}: {followed:.3f} s CPU" + (
                    f" (+{opened:.2f} s opening; the tracker's process {elsewhere:.2f} s)"
                    if mode == "on" else ""), flush=True)
    ratio = statistics.median(on) / statistics.median(off)
    print(f"{args.ranks} ranks x {args.steps} steps ({len(lines)} lines), {args.rounds} rounds:"
          f" off {statistics.median(off):.3f} s, on {statistics.median(on):.3f} s CPU "
          f"(medians); ratio {ratio:.2f} (goal <= {GOAL}); opening the tracker "
          f"{statistics.median(opening):.2f} s once per follow; the tracker's own process "
          f"{statistics.median(tracker):.2f} s CPU")
    sys.exit(0 if ratio <= GOAL else 1)


if __name__ == "__main__":
    main()
