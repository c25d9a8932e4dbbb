"""A plain script resumed as under torchrun: shown running on every host, stopped mid-run
(clean, nothing of it left), ``corral run --resume RUN`` (the console's ``r``: the same
``start(resume=...)``) runs its ranks again in that run's working directories, so the script
finds the snapshot it saved there and goes on from it, on every host (what only rank 0 saved is
copied to the hosts that lack it first, as nanoGPT's resume needs), and the log names what was
copied; a run id that is empty (an unset ``$RUN``) is refused, never taken for a fresh start;
the report counts both attempts' steps.

The stop is that of any running script (each host shown running, its ranks found by the run
directory, a clean stop, the run stopped, nothing left): this run's first launch proves it, as
a launch of its own would on the same two hosts, at the cost of a launcher and a rank each."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from profiles.user_errors import UsageError
from remote.api import (
    HostStatus,
    LogLine,
    RankEvent,
    RunHandle,
    RunStatus,
    load_history,
    local_run_dir,
    summarize,
)
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.run.controller import SshRunController
from remote.run.resume import run_to_resume
from trainer.events import StartEvent, StepEvent
from trainer.run_layout import RunLayout

try:
    from runkit import bounded, run_processes
except ImportError:  # collected as a package
    from tests.remote.runkit import bounded, run_processes  # type: ignore[no-redef]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

STEPS = 30
SNAPSHOTTING = f"""\
import json, os, time
import torch
import torch.distributed as dist

# nanoGPT's shape: only the master process saves the checkpoint (out/ckpt.json, under out/,
# which never travels), and a resume (--init_from=resume; here corral's CORRAL_RESTART) loads it
# on every rank: another host has it only if corral copied it there
dist.init_process_group("gloo")
rank = dist.get_rank()
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
start = 0
if os.environ.get("CORRAL_RESTART", "0") != "0":
    start = json.load(open("out/ckpt.json"))["step"]
else:
    print("Training from scratch", flush=True)
with open("starts.log", "a") as log:  # each host's own: never replaced by rank 0's
    log.write(f"{{rank}} {{start}}\\n")
os.makedirs("out", exist_ok=True)
for step in range(start, {STEPS}):
    opt.zero_grad()
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    if rank == 0:
        with open("out/ckpt.json.tmp", "w") as out:
            json.dump({{"step": step + 1}}, out)
        os.replace("out/ckpt.json.tmp", "out/ckpt.json")
    time.sleep(0.2)
dist.destroy_process_group()
"""


SLOWDOWNS = (1.0, 2.0)
"""The two hosts' emulated speeds: each reaches only its own host's rank."""


def _config(tmp_path: Path, script: Path) -> ClusterConfig:
    hosts = tuple(HostSection(name=f"h{i}", address="local", python=sys.executable,
                              workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1,
                              slowdown=slowdown) for i, slowdown in enumerate(SLOWDOWNS))
    # The master (node 0 of torch's static rendezvous: it serves the store) is the second
    # host: torch numbers it first, corral's ranks still follow the host order.
    return ClusterConfig(
        path=tmp_path / "cluster.toml",
        cluster=ClusterSection(name="snap", master="h1", run_root=str(tmp_path / "runs")),
        hosts=hosts, run=RunSection(script=str(script)))


def in_host_order(run_dir: Path, events: list[object]) -> None:
    """Rank r ran on host r although torch numbered the master, the second host, first."""
    log = (run_dir / "logs" / "h0" / "launcher.log").read_text()
    assert re.search(r"global_ranks=\[1\]", log), log[-2000:]  # the premise
    starts = {e.event.rank: e.event for e in events
              if isinstance(e, RankEvent) and isinstance(e.event, StartEvent)}
    # each host's emulated slowdown reaches only its own rank
    assert {r: s.slowdown for r, s in starts.items()} == dict(enumerate(SLOWDOWNS)), starts


def _snapshot_step(cwd: Path) -> int:
    try:
        return int(json.loads((cwd / "out" / "ckpt.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


async def _stopped_mid_run(first: RunHandle, cwd: Path) -> int:
    """Read ``first``'s events until every host shows running and rank 0 (h0) saved step 3,
    stop it, read its stream to the end: the step its snapshot holds. A running script's stop:
    its ranks found by the run directory, the stop clean, the run stopped, nothing left."""
    events = first.events()
    running: set[str] = set()
    async for event in bounded(events):
        if isinstance(event, HostStatus) and event.state == "running":
            running.add(event.host)
        if running == {"h0", "h1"} and _snapshot_step(cwd) >= 3:
            break
    assert run_processes(first.run_id)  # its ranks carry the run dir: stop finds them
    assert (await first.stop(grace_s=20)).clean
    final = [e async for e in bounded(events)][-1]
    assert isinstance(final, RunStatus) and final.state == "stopped", final
    assert run_processes(first.run_id) == []
    return _snapshot_step(cwd)


def _report_counts_both_attempts(config: ClusterConfig, run_id: str) -> None:
    """The report counts every attempt's steps (each numbered from 1 by the script's
    optimizer) and the time lost between them."""
    history = load_history(local_run_dir(config, run_id))
    tops: dict[int, list[int]] = {}  # per rank: the furthest step of each of its attempts
    for line in history.lines:
        if isinstance(line.event, StartEvent):
            tops.setdefault(line.event.rank, []).append(0)
        elif isinstance(line.event, StepEvent):
            tops[line.event.rank][-1] = max(tops[line.event.rank][-1], line.event.step)
    counts = [max(attempt) for attempt in zip(*tops.values(), strict=True)]
    summary, _ = summarize(history)
    assert summary.restarts == 1 and summary.lost_s > 0
    assert len(counts) == 2 and summary.steps_done == sum(counts) >= STEPS, (summary, counts)


async def test_a_script_shown_running_stops_clean_and_resumes_from_its_own_snapshot(
        tmp_path: Path) -> None:
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "train.py").write_text(SNAPSHOTTING)
    config = _config(tmp_path, tmp_path / "user" / "train.py")
    controller = SshRunController(config)
    try:
        with pytest.raises(UsageError, match="names no run"):
            await controller.start(resume="")
        first = await controller.start()
        cwd = Path(RunLayout(tmp_path / "runs" / first.run_id).script_cwd("h0"))
        stopped_at = await _stopped_mid_run(first, cwd)
        assert 3 <= stopped_at < STEPS
        second = await controller.start(resume=first.run_id)
        assert second.run_id == first.run_id
        events = [e async for e in bounded(second.events())]
        # the console's r (and --resume alone) means the newest run with working directories
        assert (await run_to_resume(config, controller.pool, None)).run_id == first.run_id
    finally:
        await controller.aclose()
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    in_host_order(tmp_path / "runs" / first.run_id, events)
    for rank, host in enumerate(("h0", "h1")):  # each host's ranks ran again in its own
        here = Path(RunLayout(tmp_path / "runs" / first.run_id).script_cwd(host))  # directory
        starts = [line.split() for line in (here / "starts.log").read_text().splitlines()]
        assert starts == [[str(rank), "0"], [str(rank), str(stopped_at)]], (host, starts)
    # h1 never wrote out/ckpt.json: it got h0's, as it was at the stop, and the log says so
    h1 = Path(RunLayout(tmp_path / "runs" / first.run_id).script_cwd("h1"))
    assert _snapshot_step(h1) == stopped_at
    assert _snapshot_step(cwd) == STEPS
    carried = [e.text for e in events if isinstance(e, LogLine) and "resume: copied" in e.text]
    assert len(carried) == 1 and "from h0" in carried[0], carried
    assert re.search(r"out/ckpt\.json \(0\.0 MiB\) to h1\b", carried[0]), carried
    assert "starts.log" not in carried[0]
    # The stream replays the record first (every seat folds the whole run), then goes live.
    replayed = [e.event.step for e in events if isinstance(e, RankEvent) and e.replayed
                and isinstance(e.event, StepEvent) and e.event.rank == 0]
    steps = [e.event.step for e in events if isinstance(e, RankEvent) and not e.replayed
             and isinstance(e.event, StepEvent) and e.event.rank == 0]
    assert replayed and max(replayed) <= stopped_at + 1, replayed  # the attempt before
    assert steps and len(steps) <= STEPS - stopped_at + 1, steps  # from the snapshot on
    assert run_processes(first.run_id) == []
    _report_counts_both_attempts(config, first.run_id)
