"""The trainer tests' warm spawner: ``spawn_ranks.py`` launches, and lone ``python -m trainer``
ranks, forked from one process per test worker that has imported torch and the launch's
libraries already (a test helper).

``spawn_ranks.py`` imports torch once per launch and forks the ranks from there; a test file
launches ranks a dozen times, and those imports were most of a short launch's CPU (5 of 6
CPU-s for three ranks and ten steps of the image task on the test machine; 9 of 10 for the
``causal_lm`` task, whose transformers and peft come on top: docs/benchmarks/ci-time.md "One warm
spawner per test worker, and the suite after it (issue 39)"). Here the imports happen once per
test worker: ``serve`` imports what ``spawn_ranks.main`` would, then, for each launch, forks a
leader that takes the launch's session, working directory, environment and output files and
runs ``spawn_ranks.main`` (it forks the ranks, with what it imports already there) or, for a
lone rank, runs ``python -m trainer`` as that process would. Every process ends as it would
have under ``spawn_ranks.py``: through the interpreter's own exit.

The environment the imports saw is the launch's: one warm process per set of libraries and
environment (less what no import reads: ``ignored_by_imports``), so that what torch reads at
import (OpenMP's thread count, a preloaded allocator) is what the launch asks for. Nothing of
corral is imported before a fork, as in ``spawn_ranks.py``.

``python warm_spawner.py [M1,M2]``: serve launches read from stdin as JSON lines
``{"argv", "cwd", "env", "out", "err"}``, answering ``{"pid"}`` once the leader is forked and
``{"status"}`` once it has ended. ``run_warm`` is the tests' side (``trainer_runs.run_launcher``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import spawn_ranks

WARM_SPAWNER = Path(__file__)
LONE = ("-m", "trainer")
"""A lone rank's command after the interpreter: ``python -m trainer ARGS``."""
MOST_WARM = 2
"""How many warm processes a test worker keeps (the least recently used one goes first)."""


def ignored_by_imports(name: str) -> bool:
    """Whether no import before the fork reads the variable ``name``, so that launches that
    differ in it share a warm process: pytest's name of the running test, and corral's own
    variables (a launch's split, run directory, profiles), since nothing of corral is imported
    before the fork (the HF module's runs differ in their split alone, and made a warm process
    of 11 CPU-s each)."""
    return name == "PYTEST_CURRENT_TEST" or name.startswith("CORRAL_")


def _become_leader(request: dict[str, object]) -> None:
    """In the forked leader: the launch's session, files, directory and environment, then
    ``spawn_ranks.main`` (or the lone rank); it leaves through the interpreter's exit."""
    os.setsid()
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                            (1, str(request["out"]), os.O_WRONLY | os.O_APPEND),
                            (2, str(request["err"]), os.O_WRONLY | os.O_APPEND)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    os.chdir(str(request["cwd"]))
    env = dict(request["env"])  # type: ignore[call-overload]
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    argv = [str(word) for word in request["argv"]]  # type: ignore[attr-defined]
    if tuple(argv[:2]) == LONE:
        spawn_ranks.become_rank(env, argv)
    sys.exit(spawn_ranks.main(argv))


def serve(preload: list[str]) -> None:
    """Import what every launch imports, then fork a leader per launch read from stdin."""
    with contextlib.suppress(OSError, AttributeError):  # ends with the test worker
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    spawn_ranks.import_before_fork(preload)
    while line := sys.stdin.readline():
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the leader: it never comes back here
            _become_leader(request)
        os.write(1, (json.dumps({"pid": pid}) + "\n").encode())
        _, status = os.waitpid(pid, 0)
        os.write(1, (json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n").encode())


class WarmProcess:
    """A running ``serve``: one launch at a time."""

    def __init__(self, preload: list[str], env: dict[str, str]) -> None:
        # Unbuffered: a read takes one answer and no more, so that the next one waits on the
        # pipe, where select sees it, and not in a buffer.
        self.proc = subprocess.Popen([sys.executable, str(WARM_SPAWNER), ",".join(preload)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     cwd=WARM_SPAWNER.parent, bufsize=0)

    def _answer(self, deadline: float | None) -> dict[str, int] | None:
        """The next answer, or None once ``deadline`` (time.monotonic) has passed."""
        assert self.proc.stdout is not None
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not select.select([self.proc.stdout], [], [], wait)[0]:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"warm_spawner.py ended (status {self.proc.wait()})")
        return dict(json.loads(line))

    def launch(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float
               ) -> subprocess.CompletedProcess[str]:
        """``argv`` (spawn_ranks.py's arguments, or ``-m trainer ARGS``) to its end; past
        ``timeout`` its session is killed and ``TimeoutExpired`` raised."""
        assert self.proc.stdin is not None
        with tempfile.TemporaryDirectory(prefix="warm-launch-") as folder:
            out, err = Path(folder, "out"), Path(folder, "err")
            out.touch()
            err.touch()
            request = {"argv": argv, "cwd": str(cwd), "env": env, "out": str(out),
                       "err": str(err)}
            unsent = memoryview((json.dumps(request) + "\n").encode())
            while unsent:  # a raw pipe may take part of it (the environment is kilobytes)
                unsent = unsent[self.proc.stdin.write(unsent) or 0:]
            started = self._answer(None)
            assert started is not None
            ended = self._answer(time.monotonic() + timeout)
            if ended is None:  # the whole session, as run_launcher kills a process group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(started["pid"], signal.SIGKILL)
                self._answer(None)
                raise subprocess.TimeoutExpired(argv, timeout)
            said = [path.read_text(errors="replace") for path in (out, err)]
        return subprocess.CompletedProcess(argv, ended["status"], *said)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


_warm: dict[tuple[object, ...], WarmProcess] = {}


def run_warm(argv: list[str], preload: list[str], cwd: Path, env: dict[str, str],
             timeout: float) -> subprocess.CompletedProcess[str]:
    """``argv`` launched from this worker's warm process for ``preload`` and ``env``."""
    import launch_count  # the test worker's (tests/): this file also runs as the warm process

    launch_count.note("warm spawner")
    key = (tuple(preload),
           tuple(sorted((k, v) for k, v in env.items() if not ignored_by_imports(k))))
    warm = _warm.pop(key, None)
    if warm is None or warm.proc.poll() is not None:
        warm = WarmProcess(preload, env)
    _warm[key] = warm  # the most recently used last
    while len(_warm) > MOST_WARM:
        _warm.pop(next(iter(_warm))).close()
    return warm.launch(argv, cwd, env, timeout)


if __name__ == "__main__":
    serve([name for name in sys.argv[1].split(",") if name] if len(sys.argv) > 1 else [])
