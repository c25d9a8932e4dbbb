"""The stop script on its own: TERM, grace, KILL, and a pattern that matches one run only."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from remote.config.cluster import HostSection
from remote.hosts.transport import LocalTransport
from remote.run.stop import count_run_processes, run_pattern, stop_host

# Stands in for a launcher that ignores TERM (only KILL ends it); it creates the file named by
# its last argument once it ignores TERM.
STUBBORN = ("import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "pathlib.Path(sys.argv[-1]).touch(); time.sleep(300)")
# Stands in for a rank: exits on TERM.
POLITE = "import time; time.sleep(300)"


def _spawn(code: str, *flags: str, cwd: Path) -> subprocess.Popen[bytes]:
    # Each in a session of its own, like torchrun's launcher group and its ranks.
    return subprocess.Popen([sys.executable, "-c", code, *flags], cwd=cwd,
                            start_new_session=True, stdin=subprocess.DEVNULL)


def test_the_pattern_matches_this_run_only() -> None:
    import re

    pattern = re.compile(run_pattern("demo-20261121-045738-9edad7"))
    assert pattern.search("python -m trainer --run-dir /r/demo-20261121-045738-9edad7 --x 1")
    assert pattern.search("torchrun --rdzv-id demo-20261121-045738-9edad7 --rdzv-conf a")
    assert not pattern.search("python -m trainer --run-dir /r/demo-20261121-045738-9edad70")
    assert not pattern.search("tail /r/demo-20261121-045738-9edad7/metrics")
    assert not pattern.search(f"sh -c pat='{run_pattern('demo-20261121-045738-9edad7')}'")


async def test_stop_terms_then_kills_and_spares_other_runs(tmp_path: Path) -> None:
    run_id, other_id = "t-20261121-000000-aaaaaa", "t-20261121-000000-aaaaab"
    run_dir = tmp_path / run_id
    (run_dir / "hosts").mkdir(parents=True)
    ready = tmp_path / "launcher-ignores-term"
    launcher = _spawn(STUBBORN, "--rdzv-id", run_id, str(ready), cwd=tmp_path)
    rank = _spawn(POLITE, "--run-dir", str(run_dir), cwd=tmp_path)
    other = _spawn(POLITE, "--run-dir", str(tmp_path / other_id), cwd=tmp_path)
    # What the launch records: the group id and its leader's start time (the ownership proof).
    (run_dir / "hosts" / "here.pgid").write_text(f"{launcher.pid}\n")
    stat = Path(f"/proc/{launcher.pid}/stat").read_text()
    (run_dir / "hosts" / "here.leader").write_text(stat.rsplit(") ", 1)[1].split()[19] + "\n")
    transport = LocalTransport(HostSection(name="here", address="local"))
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():  # a TERM before that would end it, not test the KILL
            assert time.monotonic() < deadline and launcher.poll() is None
            await asyncio.sleep(0.02)
        assert await count_run_processes(transport, run_id) == 2
        started = time.monotonic()
        remaining = await stop_host(transport, str(run_dir), run_id, grace_s=1.0)
        took = time.monotonic() - started
        assert remaining == 0
        # The launcher ignored its TERM: it and its rank were KILLed after the grace period.
        assert launcher.wait(timeout=10) == -9 and rank.wait(timeout=10) == -9
        assert took >= 1.0
        assert other.poll() is None  # another run's process is untouched
        assert (run_dir / "hosts" / "here.stopped").exists()
    finally:
        for proc in (launcher, rank, other):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_without_a_launcher_the_ranks_get_term_directly(tmp_path: Path) -> None:
    run_id = "t-20261121-000000-cccccc"
    run_dir = tmp_path / run_id
    run_dir.mkdir()
    rank = _spawn(POLITE, "--run-dir", str(run_dir), cwd=tmp_path)
    transport = LocalTransport(HostSection(name="here", address="local"))
    try:
        deadline = time.monotonic() + 10
        while await count_run_processes(transport, run_id) < 1:
            assert time.monotonic() < deadline
        assert await stop_host(transport, str(run_dir), run_id, grace_s=20.0) == 0
        assert rank.wait(timeout=10) == -15
    finally:
        if rank.poll() is None:
            rank.kill()
            rank.wait()


# A rank holding the GIL in a C loop (``sum`` over ``itertools.repeat`` checks no signal; a
# catastrophic regex would not do: CPython's regex engine checks signals as it backtracks), after
# starting a child that ignores TERM and names no run on its command line.
"""Stops in a row: one of four used to hang (issue 81)."""
"""Beyond the hosts' bound: reaching them and writing the record, on a loaded machine."""
