"""How fast a seat opened on a running run replays its record before it follows.

A seat (``corral attach``, a ``--serve`` tab, the console after ``r``) first reads the run's
record from this machine's copy (``remote.records.replay.RecordReplay``) and folds every event
into the console's model (``RunModel.apply``, the one reducer ``figures.RunFigures`` inside);
this script writes a synthetic record of ``--events`` events (4 ranks on 4 hosts: start,
step, a rebalance every 50 steps, resources every 10) as a follower's copy, then times the
read and the fold separately (CPU time), and ``corral report``'s own read and fold for comparison.

    python bench/replay.py [--events 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from console.model.run import RunModel
from remote.api import RankEvent
from remote.records.history import load_history
from remote.records.replay import RecordReplay
from remote.records.summary import summarize
from trainer.events import (
    RebalanceEvent,
    ResourceEvent,
    StartEvent,
    StepEvent,
    event_to_dict,
)

RANKS = 4
T0 = 1_700_000_000.0


def _events(rank: int, steps: int) -> list[dict[str, object]]:
    split = (16, 16, 16, 16)
    lines: list[dict[str, object]] = [event_to_dict(StartEvent(
        t=T0, rank=rank, world_size=RANKS, local_rank=0, host=f"h{rank}", pid=rank,
        device="cpu", device_name="cpu", backend="gloo", model="m", dataset="d",
        global_batch=64, split=split, policy="dynamic", step=0, total_steps=steps,
        steps_per_epoch=100, threads=1, slowdown=1.0))]
    for step in range(1, steps + 1):
        t = T0 + step * 0.1
        if rank == 0 and step % 50 == 0:
            lines.append(event_to_dict(RebalanceEvent(
                t=t, rank=0, step=step, previous=split, split=split, reason="bench",
                predicted_gain=0.0, times=(0.05,) * RANKS, policy="dynamic")))
        lines.append(event_to_dict(StepEvent(
            t=t, rank=rank, step=step, epoch=0, local_batch=16, loss=1.0 / step,
            compute_s=0.05 + 0.01 * rank, step_s=0.09, global_loss=1.0 / step)))
        if step % 10 == 0:
            lines.append(event_to_dict(ResourceEvent(t=t, rank=rank, cpu_percent=90.0,
                                                     rss_bytes=1 << 29)))
    return lines


def write_record(run_dir: Path, events: int) -> int:
    """A follower's copy of ``events`` events (about) and its ``run.json``; the count."""
    steps = max(1, int(events / RANKS / 1.1))
    written = 0
    for rank in range(RANKS):
        host = run_dir / "collected" / f"h{rank}"
        (host / "metrics").mkdir(parents=True)
        data = "".join(json.dumps(line) + "\n" for line in _events(rank, steps)).encode()
        written += data.count(b"\n")
        path = f"metrics/rank-{rank}.jsonl"
        (host / path).write_bytes(data)
        (host / "offsets.json").write_text(json.dumps({"files": {path: [len(data), len(data)]}}))
    (run_dir / "run.json").write_text(json.dumps({
        "run_id": run_dir.name, "cluster": "bench", "state": "running", "started": T0,
        "hosts": [f"h{r}" for r in range(RANKS)]}))
    return written


def fold_once(run_dir: Path, count: int) -> tuple[float, float, float]:
    """CPU seconds (this process's: a loaded machine's wall clock says more about the other
    processes than about the replay) of the seat's read, its fold, and the report's."""
    start = time.process_time()
    lines = RecordReplay(run_dir).take()
    read = time.process_time()
    model = RunModel.of_run(run_dir.name)
    for line in lines:
        model.apply(RankEvent(host=line.host, event=line.event))
    folded = time.process_time()
    summarize(load_history(run_dir))
    assert len(lines) == count and model.figures.steps_done > 0
    return read - start, folded - read, time.process_time() - folded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "bench-1"
        count = write_record(run_dir, args.events)
        read_s, fold_s, report_s = zip(*(fold_once(run_dir, count)
                                          for _ in range(args.repeat)), strict=True)
    read, fold = statistics.median(read_s), statistics.median(fold_s)
    print(f"record: {count} events, 4 ranks (CPU seconds, median of {args.repeat})")
    print(f"replay read (RecordReplay.take): {read:.2f} s  ({count / read:,.0f} events/s)")
    print(f"fold into the console's model:  {fold:.2f} s  ({count / fold:,.0f} events/s)")
    print(f"seat opened (read + fold):       {read + fold:.2f} s")
    print(f"corral report (read + fold):     {statistics.median(report_s):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
