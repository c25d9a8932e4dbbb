"""One two-host run over real sshd daemons, launched once (``attached``) and checked two ways:
``attach`` (a follower killed mid-run, a new one replays the record and continues, without
duplicates or gaps) and the run itself, trained to the end (every rank's steps, the copy
byte for byte, the record, its final weights fetched back)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from remote.api import RankEvent, RunEvent, RunStatus
from remote.config.read import load_cluster
from remote.hosts.pool import HostPool
from remote.records.collected import CollectedCopy
from remote.records.runs import list_runs, local_run_dir, read_run_info
from remote.run.controller import open_controller
from remote.run.fetch import Fetched, fetch_results
from trainer.events import EndEvent, StartEvent, StepEvent

try:
    from conftest import SshdCluster, sshd_factory
    from runkit import bounded, run_processes
except ImportError:  # collected as a package
    from tests.remote.conftest import SshdCluster, sshd_factory  # type: ignore[no-redef]
    from tests.remote.runkit import bounded, run_processes  # type: ignore[no-redef]

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

FOLLOWER = """
import asyncio, sys
from remote.api import RankEvent
from remote.config.read import load_cluster
from remote.run.controller import SshRunController

async def main():
    controller = SshRunController(load_cluster(sys.argv[1]))
    handle = await controller.start()
    print("run", handle.run_id, flush=True)
    async for event in handle.events():
        if isinstance(event, RankEvent) and event.event.kind == "step":
            print("step", event.event.rank, event.event.step, flush=True)

asyncio.run(main())
"""


def _write_toml(cluster, path: Path) -> None:
    hosts = "".join(
        f'[[hosts]]\nname = "{h.name}"\naddress = "127.0.0.1"\nport = {h.port}\nuser = "root"\n'
        f'identity_file = "{cluster.client_key}"\npython = "{sys.executable}"\n'
        f'workdir = "{cluster.root / "work" / h.name}"\ngpus = 0\nnproc = 1\nthreads = 1\n'
        f"slowdown = 8.0\n\n"
        for h in cluster.hosts)
    path.write_text(
        f'[cluster]\nname = "attach"\nmaster = "h0"\nrun_root = "{cluster.root / "runs"}"\n\n'
        f"{hosts}"
        "[run]\nsamples = 64\nglobal_batch = 8\nsteps = 40\ncheckpoint_every = 1000\n\n"
        f'[ssh]\nconnect_timeout = 5.0\nknown_hosts_file = "{cluster.known_hosts}"\n'
        f'config_file = "{cluster.ssh_config}"\n')


def _steps(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines()
            if '"event":"step"' in line]


async def _follow_then_kill(toml: Path) -> tuple[str, dict[int, list[int]]]:
    """Start a run with a follower of its own (``FOLLOWER``) and kill the follower once it has
    shown a few steps of both ranks: the run's id and the steps it showed, by rank."""
    follower = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FOLLOWER, str(toml), stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    assert follower.stdout is not None
    run_id = ""
    try:
        # Kill the follower once it has shown a few steps of both ranks.
        shown: dict[int, list[int]] = {0: [], 1: []}
        while min(len(steps) for steps in shown.values()) < 3:
            line = (await asyncio.wait_for(follower.stdout.readline(), 180)).decode()
            assert line, "the follower ended early"
            words = line.split()
            if words[0] == "run":
                run_id = words[1]
            elif words[0] == "step":
                shown[int(words[1])].append(int(words[2]))
    finally:
        follower.send_signal(signal.SIGKILL)
        await follower.wait()
    return run_id, shown


async def _attach(toml: Path, run_dir: Path,
                  run_id: str) -> tuple[dict[tuple[str, int], list[int]], list[RunEvent]]:
    """``attach`` to the run to its end: the steps this machine held of each host's rank when
    attached, and every event the attached follower received."""
    controller = open_controller(toml)
    received: list[RunEvent] = []
    try:
        handle = await controller.attach(run_id)
        # What this machine held when the follower died (cut back to its saved offsets).
        held = {}
        for host in ("h0", "h1"):
            copy = CollectedCopy(run_dir, host)
            copy.close()
            for rank in (0, 1):
                held[(host, rank)] = _steps(
                    run_dir / "collected" / host / "metrics" / f"rank-{rank}.jsonl")
        received = [e async for e in bounded(handle.events())]
    finally:
        await controller.aclose()
    return held, received


STEPS = 40
"""The run's steps (``_write_toml``)."""


@dataclass
class Attached:
    """The run: launched by a follower killed mid-run, then followed to its end by ``attach``."""
    toml: Path
    run_id: str
    run_dir: Path
    shown: dict[int, list[int]]
    """The steps the killed follower showed, by rank."""
    held: dict[tuple[str, int], list[int]]
    """The steps this machine's copy held of each (host, rank) when attached."""
    received: list[RunEvent]
    """Every event the attached follower received."""


async def _launch(start: Callable[..., SshdCluster]) -> Attached:
    cluster = start(2)
    toml = cluster.root / "cluster.toml"
    _write_toml(cluster, toml)
    run_id, shown = await _follow_then_kill(toml)
    run_dir = cluster.root / "runs" / run_id
    held, received = await _attach(toml, run_dir, run_id)
    return Attached(toml, run_id, run_dir, shown, held, received)


@pytest.fixture(scope="module")
def attached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attached]:
    """The run, launched once for every test here."""
    root = tmp_path_factory.mktemp("attach")
    with contextlib.ExitStack() as stack:
        start = stack.enter_context(sshd_factory(root))
        yield asyncio.run(_launch(start))


def test_attach_continues_where_the_killed_follower_stopped(attached: Attached) -> None:
    run_id, run_dir, shown = attached.run_id, attached.run_dir, attached.shown
    held, received = attached.held, attached.received
    final = received[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    # The seat replays the record first: each rank's start (the rank table's device), once,
    # before anything new.
    starts = [e.event for e in received if isinstance(e, RankEvent)
              and isinstance(e.event, StartEvent)]
    assert sorted(start.rank for start in starts) == [0, 1], starts
    assert all(start.device == "cpu" and start.device_name for start in starts), starts
    # Replayed in time order: a rank's start comes before anything else of that rank (another
    # rank's early events may come between two starts: the ranks start apart).
    for rank in (0, 1):
        first = next(e for e in received if isinstance(e, RankEvent) and e.event.rank == rank)
        assert isinstance(first.event, StartEvent) and first.replayed, first
    for rank in (0, 1):
        host = next(e.host for e in received if isinstance(e, RankEvent)
                    and e.event.rank == rank)
        before = held[(host, rank)]
        after = [e.event.step for e in received if isinstance(e, RankEvent)
                 and e.event.rank == rank and isinstance(e.event, StepEvent)]
        # Everything the killed follower showed is in this machine's copy.
        assert before[: len(shown[rank])] == shown[rank]
        assert after, "the run was still going when attached"
        # The record first (what the copy held), then the tail right after the last step
        # held: every step once, from the run's first, no duplicate, no gap, to the end.
        assert after[:len(before)] == before and after == list(range(1, STEPS + 1)), (rank,
                                                                                    after)
        written = (run_dir / "metrics" / f"rank-{rank}.jsonl").read_bytes()
        assert (run_dir / "collected" / host / "metrics" / f"rank-{rank}.jsonl").read_bytes() \
            == written
    assert run_processes(run_id) == []


async def _fetched(attached: Attached) -> tuple[Fetched, Path, Path]:
    config = load_cluster(attached.toml)
    pool = HostPool(config)
    try:
        result = await fetch_results(config, pool, read_run_info(config, attached.run_id))
    finally:
        await pool.aclose()
    local = local_run_dir(config, attached.run_id)
    return result, local / "final", local / "fetched" / "final"


def test_a_two_host_run_trains_to_the_end(attached: Attached) -> None:
    """Every rank trains every step on its own host to the end; the local copy holds every
    event line exactly as the ranks wrote it; `corral fetch` of this real run
    (tests/remote/scenarios/test_fetch_sshd.py has its other cases) brings rank 0's host's final/
    back,
    each file's sha256 matching, the weights loading."""
    events, run_id, run_dir = attached.received, attached.run_id, attached.run_dir
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    rank_events = [e for e in events if isinstance(e, RankEvent)]
    starts = {e.event.rank: e.host for e in rank_events if isinstance(e.event, StartEvent)}
    assert sorted(starts) == [0, 1] and sorted(starts.values()) == ["h0", "h1"]
    ends = [e.event for e in rank_events if isinstance(e.event, EndEvent)]
    assert sorted(e.rank for e in ends) == [0, 1]
    assert all(e.status == "completed" and e.step == STEPS for e in ends)
    steps = {(e.event.rank, e.event.step) for e in rank_events if isinstance(e.event, StepEvent)}
    assert steps == {(r, s) for r in (0, 1) for s in range(1, STEPS + 1)}
    for rank, host in starts.items():
        written = (run_dir / "metrics" / f"rank-{rank}.jsonl").read_bytes()
        copied = (run_dir / "collected" / host / "metrics" / f"rank-{rank}.jsonl").read_bytes()
        assert copied == written
    assert run_processes(run_id) == []
    config = load_cluster(attached.toml)
    assert [r.state for r in list_runs(config) if r.run_id == run_id] == ["completed"]
    import torch

    result, final_dir, fetched = asyncio.run(_fetched(attached))
    written_files = sorted(p.relative_to(final_dir) for p in final_dir.rglob("*") if p.is_file())
    assert written_files and result.host == "h0" and result.files == len(written_files)
    for rel in written_files:
        assert hashlib.sha256((fetched / rel).read_bytes()).digest() == hashlib.sha256(
            (final_dir / rel).read_bytes()).digest()
    assert torch.load(fetched / written_files[0], map_location="cpu")  # the weights load
