"""A stop's signals are told apart by when they arrive, not when the rank handles them: the
repeat torchrun passes on is the same request even when the rank handles it seconds later,
after a collective returns; a second request is still a second request."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from trainer_runs import REPO

from trainer.stopping import abandons


@pytest.mark.parametrize(("arrivals", "abandoned"), [
    ([], False),
    ([0.0], False),
    ([0.0, 0.01], False),            # a process-group kill and torchrun's repeat
    ([0.0, 0.01, 1.9], False),       # within the window, however many
    ([0.0, 2.1], True),              # a second request
    ([0.0, 0.01, 2.5], True),
])
def test_a_second_request_is_one_later_than_the_window(arrivals: list[float],
                                                        abandoned: bool) -> None:
    assert abandons(arrivals, 2.0) is abandoned


# A rank's life in little: the first TERM handled at once, then a wait that, like a
# collective, keeps Python's handlers from running (torch's future: its wait releases the
# interpreter and does not look at signals) while another TERM arrives at REPEAT_AT seconds.
BLOCKED_RANK = textwrap.dedent("""
    import os, signal, sys, threading, time
    import torch
    from trainer.stopping import Interrupted, StopSignals
    repeat_at, window, blocked_for, worker_term_at = (float(a) for a in sys.argv[1:])
    stop = StopSignals()
    stop.ABANDON_AFTER_S = window
    stop.install()
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signum == signal.SIGTERM, "the first TERM is handled at once"
    if worker_term_at >= 0:  # a forked data worker, waiting in C when a TERM reaches it
        worker = os.fork()
        if worker == 0:
            threading.Timer(worker_term_at + 0.5, os._exit, (0,)).start()
            torch.futures.Future().wait()
        threading.Timer(worker_term_at, os.kill, (worker, signal.SIGTERM)).start()
    collective = torch.futures.Future()
    threading.Timer(repeat_at, os.kill, (os.getpid(), signal.SIGTERM)).start()
    threading.Timer(blocked_for, collective.set_result, (None,)).start()
    started = time.monotonic()
    def next_step():  # entering a Python function runs the handlers still pending
        return "stopped after the step"
    try:
        collective.wait()
        print(next_step())
    except Interrupted as exc:
        print(exc)
    print(f"blocked {time.monotonic() - started:.1f} s")
""")


DEADLINE_S = 600


def blocked_rank(repeat_at: float, window: float, blocked_for: float,
                 worker_term_at: float = -1.0) -> subprocess.Popen[str]:
    args = (repeat_at, window, blocked_for, worker_term_at)
    return subprocess.Popen([sys.executable, "-c", BLOCKED_RANK, *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_repeat_handled_after_a_long_collective_is_the_same_request() -> None:
    # The repeat arrives 0.05 s after the first and is handled 3 s after it, past the 1-s
    # window: counted from its handling it would abandon the step. A forked worker's TERM at
    # 1.5 s is the worker's, not the rank's. The second case's TERM arrives 1.5 s after the
    # first: a second request, which abandons the step once the wait returns. Both ranks run
    # side by side.
    repeat = blocked_rank(repeat_at=0.05, window=1.0, blocked_for=3.0, worker_term_at=1.5)
    second = blocked_rank(repeat_at=1.5, window=1.0, blocked_for=3.0)
    # A deadline, not a speed: the torch matrix runs these beside the whole suite at the lowest
    # CPU priority, where importing torch alone took 93 s on a loaded machine.
    repeat_out, repeat_err = repeat.communicate(timeout=DEADLINE_S)
    second_out, second_err = second.communicate(timeout=DEADLINE_S)
    assert repeat.returncode == 0, repeat_err
    assert second.returncode == 0, second_err
    assert repeat_out.splitlines()[0] == "stopped after the step", repeat_out
    assert second_out.splitlines()[0] == "abandoned the step on a second SIGTERM", second_out
    # Each was held in its wait the whole time: what was told apart was the arrival.
    for out in (repeat_out, second_out):
        assert float(out.splitlines()[1].split()[1]) >= 2.9, out


@pytest.mark.parametrize(("written", "waits"), [
    ("2\n", 2.0),  # the grace `corral stop` gave: the launcher KILLs its ranks then
    ("0.5\n", 0.5),
    (None, 600.0),  # a TERM from elsewhere: a local-mode round may end first
    ("garbled", 600.0),
    ("99999\n", 600.0),  # never beyond the stop's limit
])
def test_a_stopped_launcher_waits_the_grace_the_stop_wrote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str | None,
        waits: float) -> None:
    from trainer.launch_contract import HOST_ENV, STOP_WAIT_LIMIT_S
    from trainer.launcher import stop_grace
    from trainer.run_layout import IN_RUN_DIR

    monkeypatch.chdir(tmp_path)  # the launcher runs in the run directory
    monkeypatch.setenv(HOST_ENV, "h1")
    if written is not None:
        stopped = tmp_path / IN_RUN_DIR.host_file("h1", "stopped")
        stopped.parent.mkdir(parents=True)
        stopped.write_text(written)
    assert stop_grace() == min(waits, STOP_WAIT_LIMIT_S)
