"""A user's script without corral's opt-in is visible, over local hosts with real ranks
(issue 36; two hosts where what is proved holds rank by rank): its own ``logging``
progress lines are shown by ``corral run``; a plain loop of exactly 12 optimizer steps is 12
steps live and in ``corral report``; a script that exits before training ends ``completed:
trained 0 steps`` with each rank's last lines and its own exit status; the DDP helper with
1-based ``set_epoch`` trains the right steps; a host's ``slowdown`` makes its rank measurably
slower."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

import pytest

from console.follow import event_lines, exit_code
from console.log_fold import TracebackFold
from console.model.run import RunModel
from remote.api import RankEvent, RunStatus, load_history, local_run_dir, summarize
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from trainer.events import StartEvent, StepEvent

try:
    from runkit import run_processes, run_to_end
except ImportError:  # collected as a package
    from tests.remote.runkit import run_processes, run_to_end  # type: ignore[no-redef]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

TWO_HOSTS = (1.0, 1.0)
"""The master and one other host: for what holds rank by rank (each rank's last lines, each
rank's steps), each host left out saves a torchrun agent and a rank, both importing torch:
several CPU-seconds on a CI machine whose cores the tests share."""


def config(tmp_path: Path, script: str, args: list[str] = (),  # type: ignore[assignment]
           slowdowns: tuple[float, ...] = (1.0, 1.0, 1.0)) -> ClusterConfig:
    (tmp_path / "user").mkdir(exist_ok=True)
    (tmp_path / "user" / "train.py").write_text(script)
    hosts = tuple(HostSection(name=f"h{i}", address="local", python=sys.executable,
                              workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1,
                              slowdown=s) for i, s in enumerate(slowdowns))
    return ClusterConfig(
        path=tmp_path / "cluster.toml",
        cluster=ClusterSection(name="vis", master="h0", run_root=str(tmp_path / "runs")),
        hosts=hosts, run=RunSection(script=str(tmp_path / "user" / "train.py"),
                                    args=tuple(args)))


def followed(events: list[object]) -> tuple[list[str], RunModel]:
    """What ``corral run`` prints of the events, and its run model at the end."""
    fold, model, printed = TracebackFold(), None, []
    for event in events:
        if model is None:
            model = RunModel.of_run("x")
        model.apply(event)  # type: ignore[arg-type]
        printed += event_lines(event, fold)  # type: ignore[arg-type]
    assert model is not None
    return printed, model


PLAIN_LOGGING = """\
import logging
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

logging.basicConfig(level=logging.INFO)
log = logging.getLogger(__name__)
dist.init_process_group("gloo")
rank = dist.get_rank()
model = DDP(torch.nn.Linear(4, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(12):
    loss = model(torch.randn(6, 4)).pow(2).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    log.info("Rank %d | Batch %d/12 | Loss: %.4f", rank, step + 1, loss.item())
dist.destroy_process_group()
"""


async def test_a_plain_loop_shows_its_logging_and_its_12_steps_live_and_in_report(
        tmp_path: Path) -> None:
    cfg = config(tmp_path, PLAIN_LOGGING, slowdowns=TWO_HOSTS)  # each rank's lines and steps
    run_id, events = await run_to_end(cfg)
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    printed, model = followed(events)
    # the script's own INFO lines are what `corral run` prints, not noise
    for rank in range(2):
        assert any(f"INFO:__main__:Rank {rank} | Batch 12/12 | Loss:" in line
                   for line in printed), printed
    assert not any("torch.distributed" in line and "INFO" in line for line in printed)
    # live: every rank's 12 steps, with the DDP module's input as their samples
    steps = [e.event for e in events if isinstance(e, RankEvent)
             and isinstance(e.event, StepEvent)]
    for rank in range(2):
        assert [s.step for s in steps if s.rank == rank] == list(range(1, 13))
    assert {s.local_batch for s in steps} == {6}
    assert model.step == 12 and exit_code(model) == 0
    assert all(row.samples_per_s for row in model.ranks.values() if row is not None)
    # corral report: the same 12 steps, the cluster's samples/s, launch-to-outcome time
    summary, _ = summarize(load_history(local_run_dir(cfg, run_id)))
    assert summary.steps_done == 12 and summary.outcome.state == "completed"
    assert summary.mean_samples_per_s and summary.wall_s and len(summary.ranks) == 2
    assert summary.loss is None  # not read from outside: absent, not a made-up curve
    # TensorBoard: the same steps' throughput, per rank and for the cluster
    if importlib.util.find_spec("tensorboard") is not None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        from remote.records import tensorboard

        board = EventAccumulator(str(tensorboard.convert_run(
            local_run_dir(cfg, run_id)).directory), size_guidance={"scalars": 0})
        board.Reload()
        cluster_rate = board.Scalars("throughput/cluster_samples_per_s")
        assert [e.step for e in cluster_rate] == list(range(1, 13))
        assert len(board.Scalars("rank_samples_per_s/rank1")) == 12
    assert run_processes(run_id) == []


EXITS_EARLY = """\
import torch.distributed as dist
dist.init_process_group("gloo")
print("loading the data", flush=True)
print(f"Unable to locate sufficient 2 gpus on rank {dist.get_rank()}. Exiting.", flush=True)
"""


async def test_a_script_that_exits_before_training_trained_nothing(tmp_path: Path) -> None:
    run_id, events = await run_to_end(config(tmp_path, EXITS_EARLY, slowdowns=TWO_HOSTS))
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    assert final.detail.startswith("trained 0 steps"), final.detail
    printed, model = followed(events)
    assert exit_code(model) == 0  # the scripts' own status, as under torchrun
    status = [line for line in printed if line.startswith(f"run {run_id}: completed")]
    for rank in range(len(TWO_HOSTS)):  # each rank's last lines, in what `corral run` shows
        assert f"rank {rank}] Unable to locate sufficient 2 gpus on rank {rank}" in status[-1]
    assert run_processes(run_id) == []


HELPER_ONE_BASED = """\
import torch, torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import TensorDataset
from trainer.integrations.ddp import Shares

dist.init_process_group("gloo")
torch.manual_seed(0)
dataset = TensorDataset(torch.randn(48, 4), torch.randn(48, 1))
shares = Shares(len(dataset), global_batch=12, epochs=3)
loader = shares.loader(dataset)
model = DDP(nn.Linear(4, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
for epoch in range(1, 4):  # pytorch/examples counts epochs from 1
    loader.sampler.set_epoch(epoch)
    for x, y in loader:
        optimizer.zero_grad()
        shares.loss(nn.functional.mse_loss(model(x), y), model).backward()
        optimizer.step()
dist.destroy_process_group()
"""


async def test_the_ddp_helper_with_one_based_epochs_trains_the_right_steps(
        tmp_path: Path) -> None:
    cfg = config(tmp_path, HELPER_ONE_BASED, slowdowns=TWO_HOSTS)  # each rank counts the same steps
    run_id, events = await run_to_end(cfg)
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    starts = [e.event for e in events if isinstance(e, RankEvent)
              and isinstance(e.event, StartEvent)]
    assert {s.total_steps for s in starts} == {12}  # 3 epochs of 48 / 12
    steps = [e.event for e in events if isinstance(e, RankEvent)
             and isinstance(e.event, StepEvent) and e.event.rank == 0]
    assert [s.step for s in steps] == list(range(1, 13))  # the opt-in's own, not doubled
    assert [s.epoch for s in steps] == [0] * 4 + [1] * 4 + [2] * 4
    _, model = followed(events)
    assert model.step == model.total_steps == 12
    summary, _ = summarize(load_history(local_run_dir(cfg, run_id)))
    assert (summary.steps_done, summary.total_steps) == (12, 12)


BUSY = """\
import time
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("gloo")
model = DDP(torch.nn.Linear(4, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(12):
    deadline = time.process_time() + 0.03  # 30 ms of the rank's own work
    while time.process_time() < deadline:
        pass
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
"""


@pytest.mark.serial  # judged by measured step times (tests/tiers.py)
async def test_a_hosts_slowdown_slows_a_plain_scripts_rank(tmp_path: Path) -> None:
    run_id, events = await run_to_end(config(tmp_path, BUSY, slowdowns=(1.0, 1.0, 4.0)))
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    compute = {rank: statistics.median(
        e.event.compute_s for e in events if isinstance(e, RankEvent)
        and isinstance(e.event, StepEvent) and e.event.rank == rank and e.event.step > 1)
        for rank in range(3)}
    # rank 2 emulates a device 4x slower than its own work (generous bounds: a busy machine)
    assert compute[2] > 2.5 * max(compute[0], compute[1]), compute
    assert run_processes(run_id) == []
