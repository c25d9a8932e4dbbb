"""Start a user's script on a rank as ``python SCRIPT ARGS...`` would.

corral's launch runs ``torchrun ... -m trainer.integrations.script_main --run-dir DIR --cwd DIR
[--cores LIST | --no-pin-cores] SCRIPT ARGS...`` rather than the script itself, so that every
rank's command line carries the run directory (``<run_root>/<run id>``) as corral's own ranks
do: ``corral stop`` verifies by it that nothing of the run is left, and ``corral check`` finds
an earlier run's leftovers. On a CPU host the rank first takes its share of the cores as
corral's own ranks do (``trainer.placement.place_rank``: disjoint cores per local rank, one
thread per core unless ``OMP_NUM_THREADS`` says otherwise). Under torchrun the rank is then
numbered, given its device, the cluster's process group and a precision it can do
(``trainer.integrations.rank_setup``), and watched until its first step
(``trainer.integrations.start_watch``); a script without corral's opt-in gets a start, a step
per optimizer step and an end event written for it (``trainer.integrations.plain_events``).
The script then runs as its own ``__main__`` as ``torchrun SCRIPT ARGS`` runs it from the
folder the user launched from: the rank's working directory is ``--cwd`` (the host's copy of
that folder inside the run directory, ``trainer.run_layout.RunLayout.script_cwd``), ``SCRIPT``
is relative to it, ``sys.argv`` is ``[SCRIPT, *ARGS]`` and the script's folder is first on the
import path. corral's own packages step out of its way first
(``trainer.integrations.user_modules``): a ``trainer`` or ``profiles`` module of the user's is
what the script imports. The run directory reaches it as ``CORRAL_RUN_DIR``
(``trainer.integrations.contract``).
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from profiles.user_errors import CorralError
from trainer.gc_pause import collector_paused
from trainer.integrations.contract import RUN_DIR_ENV, ScriptSettings
from trainer.integrations.user_modules import step_aside
from trainer.launcher_death import die_with_launcher
from trainer.membership.contract import JOIN_ENV
from trainer.placement import parse_cpulist, place_rank

if TYPE_CHECKING:
    from trainer.integrations.plain_events import PlainEvents

USAGE = ("usage: python -m trainer.integrations.script_main --run-dir DIR [--cwd DIR] "
         "[--cores LIST | --no-pin-cores] SCRIPT [ARG ...]")


def _place(words: list[str]) -> list[str]:
    """Pin this rank as the leading placement flags of ``words`` say; the words after them."""
    if not words or words[0] not in ("--cores", "--no-pin-cores"):
        return words
    pin, cores = words[0] == "--cores", None
    if pin:
        if len(words) < 2:
            raise SystemExit(USAGE)
        cores, words = parse_cpulist(words[1]), words[2:]
    else:
        words = words[1:]
    threads = os.environ.get("OMP_NUM_THREADS", "")
    placement = place_rank(local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                           local_ranks=int(os.environ.get("LOCAL_WORLD_SIZE", "1")), pin=pin,
                           cores=cores, threads=int(threads) if threads.isdigit() else None)
    os.environ["OMP_NUM_THREADS"] = str(placement.threads)
    return words


def main(argv: Sequence[str] | None = None) -> None:
    """Run the script named in ``argv`` (default ``sys.argv[1:]``) in this process."""
    die_with_launcher()  # no rank trains on once the launcher that started it is gone
    whole_lines()
    words = list(sys.argv[1:] if argv is None else argv)
    if len(words) < 3 or words[0] != "--run-dir":
        raise SystemExit(USAGE)
    run_dir, words = words[1], words[2:]
    if words[:1] == ["--cwd"] and len(words) > 1:
        os.makedirs(words[1], exist_ok=True)
        os.chdir(words[1])
        words = words[2:]
    words = _place(words)
    if not words:
        raise SystemExit(USAGE)
    script, args = words[0], words[1:]
    os.environ[RUN_DIR_ENV] = run_dir
    events = _join(script)
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    step_aside()
    try:
        runpy.run_path(os.path.abspath(script), run_name="__main__")
    except SystemExit as stop:
        _exit(stop.code, events, stop.__context__)
    except CorralError as exc:
        if exc.exit_code:
            if events is not None:
                events.end(exception_line(exc))
            raise
        # nothing failed (a joiner that found its run ended): said, no traceback, status 0
        # (its host's exit status would otherwise mark a completed run failed)
        print(f"corral: {exc.title}: {exc}", file=sys.stderr, flush=True)
        _exit(0, events)
    except BaseException as exc:
        if events is not None:
            events.end(exception_line(exc))
        raise
    _exit(None, events)


def whole_lines() -> None:
    """Each line a rank or a process its script starts prints reaches the log in one write.

    The launch asks for unbuffered output (``PYTHONUNBUFFERED``: a rank's lines show as they
    are printed), under which ``print`` writes a line's text and its newline apart: the lines
    of two processes sharing the rank's output (``mp.spawn``'s workers) then glue together.
    The rank's own streams become line-buffered (a line is written whole, at once), and the
    processes its script starts get Python's default buffering, as under plain torchrun
    (their ``print(..., flush=True)`` is one write)."""
    if os.environ.pop("PYTHONUNBUFFERED", None) is None:
        return
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True, write_through=False)


def exception_line(exc: BaseException) -> str:
    """The line a traceback of ``exc`` ends with (``FileNotFoundError: [Errno 2] ...``): its
    type as Python prints it and the first line of its message."""
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else (
        f"{kind.__module__}.{kind.__qualname__}")
    message = str(exc).strip().split("\n", 1)[0]
    return f"{name}: {message}" if message else name


def _join(script: str) -> PlainEvents | None:
    """Set this rank up as corral's own (``rank_setup``) and watch its start; the events of a
    script without corral's opt-in (None outside torchrun)."""
    settings = ScriptSettings.from_env()
    assert settings is not None  # CORRAL_RUN_DIR was just set
    if "WORLD_SIZE" not in os.environ:  # not under a launcher: the script as is
        return None
    with collector_paused():  # torch and corral's rank set-up load here
        from trainer.dist import rank_info
        from trainer.integrations import rank_setup
        from trainer.integrations.plain_events import PlainEvents
        from trainer.integrations.start_watch import StartWatch
    info = rank_info()
    if settings.hang_limit > 0:  # from before the process group: a rank may never join
        StartWatch(settings.hang_limit, info.rank, info.world_size)
    device = rank_setup.join(settings)
    if JOIN_ENV in os.environ:
        # A joiner (an opt-in's: a plain script never joins) is rank 0 of its own launch until
        # let in, a number the run's rank 0 holds: the opt-in writes its events under its
        # member id once admitted; one that never is (the run ended first) writes none. A
        # stop still ends it with the opt-in's ``interrupted`` end.
        from trainer.integrations.plain_events import joiner_term

        joiner_term()
        return None
    return PlainEvents(settings, device, script)


def _exit(code: object, events: PlainEvents | None = None,
          handling: BaseException | None = None) -> NoReturn:
    """End the rank with the script's exit ``code`` once its own exit handlers have run.

    A script that exits while it handles an exception (``handling``: hydra prints the traceback
    and a hint, then exits 1) failed of that exception: the end event names it, as it does one
    the script raised, rather than the exit status alone.

    A script that never leaves its process group (an HF Trainer's does not) can abort in the
    interpreter's C++ teardown ("terminate called without an active exception", SIGABRT) while
    gloo's and DDP's objects are destroyed in no set order, failing a run that had finished. So
    the rank runs the script's ``atexit`` handlers (trackers closing their runs, logging's
    flush), leaves the group, flushes its output and exits without that teardown. A script that
    raised is not handled here: its exception ends the rank as Python's would.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    why = None if status == 0 else f"exited with status {status}"
    if why is not None and handling is not None and not isinstance(handling, SystemExit):
        why = f"{exception_line(handling)} ({why})"
    if events is not None:  # decided now: the launcher may stop the rank in its exit handlers
        events.ending(why)
    atexit._run_exitfuncs()
    if events is not None:
        events.end(why)
    if "torch" in sys.modules:  # else no process group can exist, and torch need not load
        from trainer.dist import destroy_process_group

        destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
