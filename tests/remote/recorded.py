"""Runs as a follower records them (``run.json`` + ``collected/``), written from event objects.

Not a test module: the report, TensorBoard and console tests build recorded runs with it when
they need a run that ends in a given way (a failure, a stop, a restart) without running one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from remote.records.runs import RunInfo
from trainer.events import (
    CapacityEvent,
    EndEvent,
    EvalEvent,
    RebalanceEvent,
    StartEvent,
    StepEvent,
    TrainerEvent,
    event_to_dict,
)

HOSTS = ("fast", "slow")


def write_recorded(run_dir: Path, info: RunInfo,
                   lines: Sequence[tuple[str, TrainerEvent | dict[str, Any]]]) -> None:
    """``run.json`` and each ``(host, event)`` line in ``collected/<host>/metrics/``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    body = {**info.__dict__, "hosts": list(info.hosts)}
    (run_dir / "run.json").write_text(json.dumps(body), encoding="utf-8")
    for host, event in lines:
        data = event if isinstance(event, dict) else event_to_dict(event)
        path = run_dir / "collected" / host / "metrics" / f"rank-{data['rank']}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(data) + "\n")


def start(rank: int, t: float, *, step: int = 0, total: int = 20,
          split: tuple[int, ...] = (8, 8)) -> StartEvent:
    return StartEvent(t=t, rank=rank, world_size=len(split), local_rank=0, host=HOSTS[rank],
                      pid=100 + rank, device="cpu", device_name="test cpu", backend="gloo",
                      model="simple_cnn", dataset="synthetic_image", global_batch=sum(split),
                      split=split, policy="dynamic", step=step, total_steps=total,
                      steps_per_epoch=100, threads=1, slowdown=1.0)


def step_pair(step: int, t: float, split: tuple[int, int], loss: float,
              ) -> list[tuple[str, TrainerEvent]]:
    """Both ranks' step events: rank 1 computes 3× slower per sample; rank 0 waits."""
    compute = (split[0] * 0.001, split[1] * 0.003)
    step_s = max(compute) + 0.002
    out: list[tuple[str, TrainerEvent]] = []
    for rank in (0, 1):
        out.append((HOSTS[rank], StepEvent(
            t=t, rank=rank, step=step, epoch=0, local_batch=split[rank], loss=loss + rank,
            compute_s=compute[rank], step_s=step_s, global_loss=loss if rank == 0 else None)))
    return out


def as_older_trainer(lines: Sequence[tuple[str, TrainerEvent | dict[str, Any]]],
                     ) -> list[tuple[str, TrainerEvent | dict[str, Any]]]:
    """``lines`` as a trainer before the one step reporter wrote them: step events carry
    their throughputs (``samples_per_s``; rank 0 also ``cluster_samples_per_s``)."""
    older: list[tuple[str, TrainerEvent | dict[str, Any]]] = []
    for host, event in lines:
        if isinstance(event, StepEvent):
            extra = {"samples_per_s": event.local_batch / event.step_s}
            if event.rank == 0:
                extra["cluster_samples_per_s"] = 16 / event.step_s  # global batch 8 + 8
            older.append((host, {**event_to_dict(event), **extra}))
        else:
            older.append((host, event))
    return older


def synthetic_run(*, steps: int, t0: float = 1_700_000_000.0, move_at: int | None = 6,
                  end: str = "completed", error: str | None = None,
                  first_step: int = 0, extra: bool = False,
                  ) -> list[tuple[str, TrainerEvent | dict[str, Any]]]:
    """Two ranks from ``first_step`` to ``steps``, one rebalance at ``move_at``; ranks end
    with ``end`` (``failed``: rank 1 fails with ``error``). ``extra``: eval lines and an
    ``lr`` field on steps, as a newer trainer writes them."""
    split = (8, 8)
    lines: list[tuple[str, TrainerEvent | dict[str, Any]]] = [
        (HOSTS[r], start(r, t0, step=first_step, total=steps)) for r in (0, 1)]
    # Each host's solo figure: fast 1 ms a sample (its profile), slow 3 ms (a probe).
    lines.append((HOSTS[0], CapacityEvent(
        t=t0, rank=0, source="split", samples_per_s=(None, None), max_batch=(None, None),
        solo_samples_per_s=(1000.0, 1000.0 / 3), solo_source=("profile", "probe"),
        solo_batch=(16, 16))))
    t = t0
    for step in range(first_step + 1, steps + 1):
        t += 0.05
        if step == move_at:
            lines.append((HOSTS[0], RebalanceEvent(
                t=t, rank=0, step=step, previous=split, split=(12, 4),
                reason="rank 1 slowest; moved 4 samples", predicted_gain=0.4,
                times=(0.008, 0.024), policy="dynamic")))
            split = (12, 4)
        for host, event in step_pair(step, t, split, loss=2.0 / step):
            data: TrainerEvent | dict[str, Any] = event
            if extra:
                data = {**event_to_dict(event), "lr": 0.01 / step}
            lines.append((host, data))
        if extra and step % 5 == 0:
            lines.append((HOSTS[0], EvalEvent(t=t, rank=0, step=step, samples=100, units=100,
                                              loss=3.0 / step, accuracy=step / 100)))
    for rank in (0, 1):
        status = end if rank == 1 or end != "failed" else "interrupted"
        lines.append((HOSTS[rank], EndEvent(t=t + 0.01, rank=rank, step=steps, status=status,
                                            error=error if rank == 1 else None)))  # type: ignore[arg-type]
    return lines


def restarted_run(*, gap_s: float = 30.0) -> list[tuple[str, TrainerEvent | dict[str, Any]]]:
    """A run stopped after step 10 (with a rebalance at step 6) and relaunched ``gap_s`` later
    from the checkpoint of step 5: steps 6-10 run again, on the first split, then on to 20."""
    first = synthetic_run(steps=10, end="interrupted")
    t_restart = 1_700_000_000.0 + 10 * 0.05 + gap_s
    return first + synthetic_run(steps=20, t0=t_restart, move_at=None, first_step=5, extra=True)


def info(run_id: str, state: str, *, detail: str = "", name: str = "",
         cluster: str = "rep") -> RunInfo:
    return RunInfo(run_id=run_id, cluster=cluster, state=state, started=time.time(),
                   hosts=HOSTS, detail=detail, name=name)
