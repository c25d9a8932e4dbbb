"""A script without corral's opt-in, started by ``script_main`` as torchrun starts it, gets a step
event per optimizer step from torch's global hooks: every step counted, its samples the DDP
module's input (accumulation counts every micro-batch; a call by keyword alone too), its first
step timed from its first forward, its loss left unread; a script that
took no step ends with step 0; one that exits after printing its traceback (hydra) names its
exception; its resources are sampled; an emulated slowdown makes that rank's compute slower.
The ranks get torchrun's environment from the tests' spawner (``SPAWN_RANKS``: the agent is
no part of what a rank writes); a stopped script's TERM is sent to torchrun itself, which
passes it on as ``corral stop`` has it do."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainer_runs import rank_env, run_launcher, script_libraries, spawn_cmd

from trainer.event_log import events_path
from trainer.events import EndEvent, ResourceEvent, StartEvent, StepEvent, parse_event
from trainer.integrations.contract import RUN_DIR_ENV, SLOWDOWN_ENV

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PLAIN_DDP = """\
import logging, sys, time
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

logging.basicConfig(level=logging.INFO)
dist.init_process_group("gloo")
model = DDP(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
steps, micro = int(sys.argv[1]), int(sys.argv[2])
dist.barrier()
time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)  # its own start-up: no step's time
with torch.no_grad():
    model(torch.randn(3, 4))  # an evaluation before training (nanoGPT's step 0): no step's either
for step in range(steps):
    for i in range(micro):
        x = torch.randn(5, 4)
        out = model(input=x) if i == 0 else model(x)  # by keyword alone, as HF's Trainer calls
        out.pow(2).mean().backward()
    opt.step()
    opt.zero_grad()
    with torch.no_grad():
        model(torch.randn(3, 4))  # an evaluation pass: not a training sample
    logging.getLogger(__name__).info("step %d", step)
"""


def plain_env(slowdown: str = "") -> dict[str, str]:
    """The ranks' environment: none of corral's launch variables but ``slowdown``'s."""
    env = {k: v for k, v in rank_env().items() if not k.startswith("CORRAL_")}
    if slowdown:
        env[SLOWDOWN_ENV] = slowdown
    return env


def script_main(tmp_path: Path, script: str, args: list[str]) -> list[str]:
    """``script`` (written to tmp_path) started through script_main: the ranks' command."""
    (tmp_path / "train.py").write_text(script)
    return ["-m", "trainer.integrations.script_main", "--run-dir", str(tmp_path / "run"),
            str(tmp_path / "train.py"), *args]


def run_plain(tmp_path: Path, script: str, args: list[str], nproc: int = 2,
              slowdown: str = "", warm: bool = True
              ) -> tuple[subprocess.CompletedProcess[str], Path]:
    command = script_main(tmp_path, script, args)
    spawner = spawn_cmd(nproc, script_libraries(tmp_path / "train.py"))
    done = run_launcher([*spawner, *command], env=plain_env(slowdown), timeout=150, warm=warm)
    return done, tmp_path / "run"


def events_of(run_dir: Path, rank: int) -> list[object]:
    lines = events_path(run_dir, rank).read_text().splitlines()
    return [parse_event(line) for line in lines]


STARTUP_S = 3.0
"""The script's own start-up before its first forward (data and model loading, say)."""


def test_every_optimizer_step_of_a_plain_ddp_script_is_an_event(tmp_path: Path) -> None:
    done, run_dir = run_plain(tmp_path, PLAIN_DDP, ["12", "2", str(STARTUP_S)])
    assert done.returncode == 0, done.stderr
    assert RUN_DIR_ENV  # the run directory reached the ranks through script_main
    for rank in (0, 1):
        events = events_of(run_dir, rank)
        assert isinstance(events[0], StartEvent) and events[0].task == "script"
        steps = [e for e in events if isinstance(e, StepEvent)]
        assert [e.step for e in steps] == list(range(1, 13))
        # two micro-batches of 5 per step, the first step's first called by keyword alone;
        # the no_grad pass is not counted
        assert {e.local_batch for e in steps} == {10}
        assert all(e.loss is None and e.step_s > 0 for e in steps)
        # the first step's time runs from its first forward: the start-up is not in it
        assert steps[0].step_s < STARTUP_S
        end = events[-1]
        assert isinstance(end, EndEvent) and end.status == "completed" and end.step == 12


NO_STEP = """\
import torch.distributed as dist
dist.init_process_group("gloo")
print("need 2 GPUs, exiting", flush=True)
"""


def test_a_script_that_never_steps_ends_at_step_0(tmp_path: Path) -> None:
    # One rank: only rank 0's events are read, and a rank's end is its own (no peer in it).
    done, run_dir = run_plain(tmp_path, NO_STEP, [], nproc=1)
    assert done.returncode == 0, done.stderr
    events = events_of(run_dir, 0)
    assert not [e for e in events if isinstance(e, StepEvent)]
    assert isinstance(events[-1], EndEvent) and events[-1].step == 0


HYDRA_SHAPED = """\
import atexit, os, sys, time, traceback
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

def main():
    dist.init_process_group("gloo")
    model = DDP(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    if dist.get_rank() == 1:  # an exit handler that outlasts rank 0's whole exit (an upload)
        atexit.register(time.sleep, 120)
    with open(os.path.join("data", "input.txt")) as handle:
        handle.read()

try:  # hydra's run_and_report: the traceback, then a hint, then exit 1
    main()
except Exception:
    traceback.print_exc()
    sys.stderr.write("\\nSet the environment variable HYDRA_FULL_ERROR=1 for a complete "
                     "stack trace.\\n")
    sys.exit(1)
"""


def test_a_script_exiting_after_its_traceback_ends_naming_the_exception(tmp_path: Path) -> None:
    """hydra prints a hint after the traceback and exits 1: the end event names the exception
    the traceback ends with, not the exit status alone nor the hint. Rank 1 is still in its
    exit handlers when rank 0 has exited, so its launcher stops it there (as torchrun stops
    the rest of a failed group): it failed all the same, and its end says so."""
    done, run_dir = run_plain(tmp_path, HYDRA_SHAPED, [])
    assert done.returncode != 0
    assert "HYDRA_FULL_ERROR=1 for a complete stack trace." in done.stderr  # the hint came
    for rank in (0, 1):
        end = events_of(run_dir, rank)[-1]
        assert isinstance(end, EndEvent) and end.status == "failed" and end.step == 1
        assert end.error == ("FileNotFoundError: [Errno 2] No such file or directory: "
                             "'data/input.txt' (exited with status 1)")


UNTIL_STOPPED = """\
import os, signal, sys, time
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
import corral.plain_events

corral.plain_events.FLUSH_EVERY_S = 1e9  # nothing written between steps but the first
dist.init_process_group("gloo")
model = DDP(torch.nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
step = 0
if sys.argv[1:] == ["--own-handler"]:  # saves, then leaves at once (no exit handlers)
    def on_term(signum, frame):
        open(f"saved{dist.get_rank()}", "w").close()
        os._exit(0)
    signal.signal(signal.SIGTERM, on_term)
while True:
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
    step += 1
    if step == 20 and dist.get_rank() == 0:
        open("stepped", "w").close()
    time.sleep(0.01)
"""


def sampled(run_dir: Path, rank: int) -> bool:
    """Whether rank ``rank`` has written a resources event (each line is flushed as written;
    one being written has no newline yet)."""
    path = events_path(run_dir, rank)
    lines = path.read_text().split("\n")[:-1] if path.exists() else []
    return any(isinstance(parse_event(line), ResourceEvent) for line in lines)


def stop_after_20_steps(tmp_path: Path, args: list[str], resources: bool = False
                        ) -> tuple[int, str]:
    """Run UNTIL_STOPPED, TERM its torchrun (what ``corral stop`` and ``x`` send; torchrun
    passes it on to every rank) after 20 steps (``resources``: and once every rank has written
    a resources sample, the first two seconds after its first step): its exit status and
    stderr."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node=2", *script_main(tmp_path, UNTIL_STOPPED, args)]
    launcher = subprocess.Popen(command, cwd=tmp_path, env=plain_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def ready() -> bool:
        return (tmp_path / "stepped").exists() and (
            not resources or all(sampled(tmp_path / "run", r) for r in (0, 1)))

    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert launcher.poll() is None, launcher.communicate()[1]
            assert time.monotonic() < deadline, "no 20 steps (and samples) within 120 s"
            time.sleep(0.05)
        launcher.send_signal(signal.SIGTERM)
        stderr = launcher.communicate(timeout=90)[1]
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    return launcher.returncode, stderr


def steps_taken(run_dir: Path, rank: int, stderr: str) -> list[object]:
    """A rank's events, once its steps are checked: every one from 1 on, more than the first
    (the only one written at once when nothing is flushed between steps)."""
    events = events_of(run_dir, rank)
    steps = [e.step for e in events if isinstance(e, StepEvent)]
    assert len(steps) >= 10 and steps == list(range(1, len(steps) + 1)), stderr
    return events


def test_a_stopped_plain_script_writes_every_step_it_took_and_its_resources(
        tmp_path: Path) -> None:
    """Each rank writes the steps it had not written yet and an end at its last step, then
    ends of the signal as it would without corral. Its resources are sampled as corral's own
    ranks' are (every ``resources_every``, 2 s by default): the run is stopped once each rank
    has a sample, and every sample holds the rank's memory."""
    status, stderr = stop_after_20_steps(tmp_path, [], resources=True)
    assert status != 0
    ends = []
    for rank in (0, 1):
        events = steps_taken(tmp_path / "run", rank, stderr)
        samples = [e for e in events if isinstance(e, ResourceEvent)]
        assert samples and all(e.rss_bytes and e.rss_bytes > 0 for e in samples)
        steps = [e.step for e in events if isinstance(e, StepEvent)]
        end = events[-1]
        assert isinstance(end, EndEvent) and end.step == steps[-1], (end, stderr)
        ends.append(end)
    # the first rank to take the signal saw no peer go: stopped, not failed
    assert any(e.status == "interrupted" and e.error == "stopped by SIGTERM" for e in ends)


def test_a_scripts_own_term_handler_runs_after_its_steps_are_written(tmp_path: Path) -> None:
    """The script's handler leaves with ``os._exit`` (nothing after it runs): its steps were
    written before it ran."""
    stop_after_20_steps(tmp_path, ["--own-handler"])
    for rank in (0, 1):
        assert (tmp_path / f"saved{rank}").exists()  # the script's own handler ran
        steps_taken(tmp_path / "run", rank, "")


SLEEPY = """\
import sys, time
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("gloo")
model = DDP(torch.nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(int(sys.argv[1])):
    deadline = time.process_time() + 0.02  # 20 ms of the rank's own work
    while time.process_time() < deadline:
        pass
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    opt.zero_grad()
"""


@pytest.mark.serial  # judged by measured step times (tests/tiers.py)
def test_a_slowdown_emulates_a_slower_rank_of_a_plain_script(tmp_path: Path) -> None:
    # The spawner as a process of its own, not the worker's warm one: a rank forked from that
    # one measured an emulated 2x as 1.37-1.46 (tests/trainer/scenarios/test_lowcomm.py).
    done, run_dir = run_plain(tmp_path, SLEEPY, ["10"], slowdown="1.0,4.0", warm=False)
    assert done.returncode == 0, done.stderr
    compute = {}
    for rank in (0, 1):
        events = events_of(run_dir, rank)
        assert isinstance(events[0], StartEvent) and events[0].slowdown == (1.0, 4.0)[rank]
        steps = [e for e in events if isinstance(e, StepEvent)][1:]  # the first warms up
        compute[rank] = sorted(e.compute_s for e in steps)[len(steps) // 2]
    # rank 1 emulates a device 4x slower: its compute is 4x its own work (bounds generous)
    assert compute[1] > 2.5 * compute[0], compute
