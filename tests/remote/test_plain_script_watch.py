"""What corral's side makes of a plain script's run, with no process: its start says 0 total
steps (unknown), so no step is its last and a rank silent after any step is a hang; the script's
ranks get time to name the hang themselves before corral stops the run; and a file the run
wrote on one host, missing on another, is explained by its writer, never by a line that would
send the launch folder's copy."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.events import RankEvent
from remote.hosts.command_errors import CompletedCommand
from remote.run.hang import SCRIPT_GRACE_S, HangWatch
from remote.run.run_written import IDIOMS, RunWritten
from trainer.events import StartEvent, StepEvent


def _start(rank: int, task: str = "script") -> RankEvent:
    fields = {f: 0 for f in StartEvent.__dataclass_fields__ if f != "kind"}
    fields.update(t=0.0, rank=rank, host=f"h{rank}", pid=100 + rank, device="cpu",
                  device_name="cpu", backend="gloo", model="train.py", dataset="", split=(),
                  policy="", total_steps=0, resumed_from=None, task=task)
    return RankEvent(host=f"h{rank}", event=StartEvent(**fields))


def _step(rank: int, step: int) -> RankEvent:
    fields = {f: 0 for f in StepEvent.__dataclass_fields__ if f != "kind"}
    fields.update(t=float(step), rank=rank, step=step, step_s=0.05)
    return RankEvent(host=f"h{rank}", event=StepEvent(**fields))


def test_a_plain_script_silent_after_its_fifth_step_is_silent() -> None:
    """Unknown total steps: the fifth step is not taken for the last, so three ranks that
    stop stepping after it are silent (they were never silent before)."""
    watch = HangWatch(factor=10.0, limit_s=20.0)
    for rank in range(3):
        watch.observe(_start(rank), 0.0)
        for step in range(1, 6):
            watch.observe(_step(rank, step), float(step))
    assert watch.script
    silence = watch.silence(30.0)
    assert silence is not None and silence.ranks == (0, 1, 2), silence


def test_a_known_last_step_still_ends_the_watch() -> None:
    watch = HangWatch(factor=10.0, limit_s=20.0)
    start = _start(0, task="image")
    start.event.__dict__["total_steps"] = 5  # (a frozen event, built for the test)
    watch.observe(start, 0.0)
    for step in range(1, 6):
        watch.observe(_step(0, step), float(step))
    assert watch.silence(100.0) is None


def test_the_scripts_own_word_is_awaited_before_corral_stops_it() -> None:
    """Its ranks gather their positions and exit a few seconds past hang_limit: corral's
    stop waits that long more, so the run's failure is theirs, naming where each rank is."""
    assert SCRIPT_GRACE_S >= 10.0


TEXT = ("h1 rank 1 failed: FileNotFoundError: [Errno 2] No such file or directory: "
        "'ckpt/best.pt'")


def _written(tmp_path: Path, since: float, *addresses: str) -> RunWritten:
    hosts = tuple(HostSection(name=f"h{i}", address=a) for i, a in enumerate(addresses))
    config = ClusterConfig(path=tmp_path / "cluster.toml",
                           cluster=ClusterSection(name="t", master="h0"), hosts=hosts)
    return RunWritten(config, str(tmp_path / "run"), since, lambda host: [int(host[1:])])


def test_a_file_rank_0_wrote_is_named_with_its_writer_not_sent_from_home(
        tmp_path: Path) -> None:
    written = _written(tmp_path, time.time() - 5, "local", "local", "local")
    cwd = tmp_path / "run" / "cwd" / "h0"
    (cwd / "ckpt").mkdir(parents=True)
    (cwd / "ckpt" / "best.pt").write_bytes(b"new")
    said = written.explain(TEXT)
    assert said is not None and said.startswith(
        "ckpt/best.pt was written by this run on h0 (rank 0, at "), said
    assert IDIOMS in said and "broadcast" in said and "LOCAL_RANK == 0" in said
    assert ".corralignore" not in said and "!/" not in said


def test_a_file_older_than_the_run_is_not_the_runs(tmp_path: Path) -> None:
    """The launch folder's own copy (pushed, or left home) is for the missing-file hint."""
    written = _written(tmp_path, time.time() - 60, "local")
    old = tmp_path / "run" / "cwd" / "h0" / "ckpt" / "best.pt"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert written.explain(TEXT) is None


class _Transport:
    def __init__(self, name: str, answer: str) -> None:
        self.host = type("Host", (), {"name": name})()
        self.answer = answer
        self.commands: list[str] = []

    async def run(self, command: str, **_: Any) -> CompletedCommand:
        self.commands.append(command)
        return CompletedCommand(command=command, exit_status=0, stdout=self.answer, stderr="")


class _Pool:
    def __init__(self, answers: dict[str, str]) -> None:
        self.transports = {h: _Transport(h, a) for h, a in answers.items()}

    async def gather(self, fn: Callable[[Any], Awaitable[Any]],
                     hosts: list[str]) -> dict[str, Any]:
        return {h: await fn(self.transports[h]) for h in hosts}


async def test_a_remote_host_is_asked_as_soon_as_a_rank_names_the_path(tmp_path: Path) -> None:
    """Its working directory is not on this machine: the rank's output line naming the path
    has the hosts asked (once), and the failure's words then name the writer."""
    now = time.time()
    written = _written(tmp_path, now - 30, "gpu0", "gpu1")
    pool = _Pool({"h0": f"{int(now)}\n", "h1": ""})
    written.heard(pool, "FileNotFoundError: [Errno 2] No such file or directory: 'ckpt/best.pt'")
    written.heard(pool, "FileNotFoundError: [Errno 2] No such file or directory: 'ckpt/best.pt'")
    await asyncio.gather(*written._asked.values())
    assert len(written._asked) == 1
    asked = pool.transports["h0"].commands
    assert asked == [f"stat -c %Y {tmp_path}/run/cwd/h0/ckpt/best.pt 2>/dev/null || true"]
    said = written.explain(TEXT)
    assert said is not None and said.startswith("ckpt/best.pt was written by this run on h0")
