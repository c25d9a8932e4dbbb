"""The host-side wrapper of remote.hosts.own_group, run by this machine's ``sh`` as a host's
login shell would: the command's output and status pass through; the end of the channel's
input KILLs the command and what it started (issue 59: probes outliving a Ctrl-C); what the
command started in a session of its own (the launcher) is left alone."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from remote.hosts.own_group import in_own_group

try:
    from runkit import alive
except ImportError:  # collected as a package
    from tests.remote.runkit import alive  # type: ignore[no-redef]

DEADLINE_S = 10.0


def _start(command: str, *, reads_channel: bool = False, shell: str = "sh") -> subprocess.Popen:
    return subprocess.Popen([shell, "-c", in_own_group(command, reads_channel=reads_channel)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _pids(path: Path, count: int) -> list[int]:
    """The ``count`` pids the command wrote to ``path``, once it has written them all."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        words = path.read_text().split() if path.exists() else []
        if len(words) == count:
            return [int(w) for w in words]
        time.sleep(0.02)
    raise AssertionError(f"the command never wrote {count} pids to {path}")


def _session(pid: int) -> int | None:
    """The session ``pid`` is in, or None once it is gone."""
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_output_and_status_pass_through(shell: str) -> None:
    proc = _start("echo out; echo err >&2; exit 7", shell=shell)
    assert proc.wait(timeout=DEADLINE_S) == 7  # stdin still open: the command ended alone
    assert (proc.stdout.read(), proc.stderr.read()) == (b"out\n", b"err\n")  # type: ignore[union-attr]


def test_a_command_without_input_reads_end_of_file_not_the_channel() -> None:
    proc = _start("cat; echo after")
    assert proc.wait(timeout=DEADLINE_S) == 0  # stdin still open
    assert proc.stdout.read() == b"after\n"  # type: ignore[union-attr]


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_the_end_of_the_channel_kills_the_command_and_what_it_started(
        shell: str, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # A child in the background and the command itself, both silent (a slow Python's start).
    proc = _start(f"sleep 300 & echo $! $$ > {pids}; exec sleep 301", shell=shell)
    started = _pids(pids, 2)
    assert all(alive(pid) for pid in started)
    proc.stdin.close()  # type: ignore[union-attr]  # what a closed SSH channel leaves
    assert proc.wait(timeout=DEADLINE_S) == 137
    deadline = time.monotonic() + DEADLINE_S
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in started)


def test_what_the_command_starts_in_a_session_of_its_own_lives_on(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # As remote.run.launch starts the launcher: setsid, stdin from /dev/null, in the background.
    proc = _start(f"setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {pids}; sleep 300")
    (launcher,) = _pids(pids, 1)
    try:
        # $! is the forked shell before it runs setsid(1): until setsid has made it a session's
        # leader it is still in the wrapped group, and the channel's end rightly KILLs it.
        deadline = time.monotonic() + DEADLINE_S
        while _session(launcher) != launcher and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _session(launcher) == launcher
        proc.stdin.close()  # type: ignore[union-attr]
        assert proc.wait(timeout=DEADLINE_S) == 137
        assert alive(launcher)
    finally:
        os.kill(launcher, 9)


def test_a_reader_of_the_channel_ends_with_what_it_started_at_its_end(tmp_path: Path) -> None:
    # A tailer or listener reads the channel only for its end (the watcher reads it too, so no
    # line sent after the host's env is the command's alone): at that end, the command and
    # whatever it started are gone.
    pids = tmp_path / "pids"
    proc = _start(f"sleep 300 & echo $! $$ > {pids}; read -r line; exec sleep 301",
                  reads_channel=True)
    started = _pids(pids, 2)
    proc.stdin.close()  # type: ignore[union-attr]
    proc.wait(timeout=DEADLINE_S)
    deadline = time.monotonic() + DEADLINE_S
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in started)
