"""The results commands of ``corral``: ``report``, ``tensorboard``, ``mlflow``, ``aim``, ``fetch``,
``logs``.

They read what this machine recorded about past runs (``<run_root>/<run_id>``); only ``fetch``
talks to a host. ``console.cli`` adds their parsers and dispatches to them.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from console.session import Session
from console.tracking_cli import add_tracking_parsers, cmd_aim, cmd_mlflow
from profiles.user_errors import CorralError, UsageError

JSON_SCHEMA_DOC = "docs/report.md"


def add_results_parsers(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add ``report``, ``tensorboard``, ``mlflow``, ``aim``, ``fetch`` and ``logs`` through
    ``cli.build_parser``'s factory."""
    report = command("report", "Summarise a run from what this machine recorded: outcome, "
                     "steps, wall time, throughput (mean, p50, p95) against the ideal, per-rank "
                     "utilisation, balancer moves and their measured gains, loss and eval, time "
                     "lost to restarts. Several runs are compared side by side.")
    report.add_argument("runs", metavar="RUN", nargs="*",
                        help="run ids, run names or unique starts of ids (default: the newest)")
    report.add_argument("--json", action="store_true",
                        help=f"print the summaries as JSON (schema: {JSON_SCHEMA_DOC})")
    report.add_argument("--plot", metavar="FILE.png", type=Path,
                        help="also draw loss, throughput and shares over steps into a PNG "
                             "(needs matplotlib: the plot extra)")
    report.add_argument("--chart", action="store_true",
                        help="also draw loss and throughput over steps in this terminal")
    board = command("tensorboard", "Write TensorBoard files for runs (converting runs "
                    "recorded before they were written live) and start TensorBoard on them "
                    "(needs the tensorboard extra).")
    board.add_argument("runs", metavar="RUN", nargs="*",
                       help="run ids or names (default: every run of this cluster)")
    board.add_argument("--port", type=int, default=6006, help="TensorBoard's port (6006)")
    board.add_argument("--write-only", action="store_true",
                       help="write the files and print where, without starting TensorBoard")
    add_tracking_parsers(command)
    fetch = command("fetch", "Copy a run's final model (or adapter) from the host that wrote "
                    "it into the local run directory, verified by checksum; of a script's "
                    "run, what the script wrote: its working directory, or PATHs in it. An "
                    "interrupted fetch resumes where it stopped.")
    fetch.add_argument("run_id", metavar="RUN", help="run id or name")
    # A default, or argparse's error calls PATH required too.
    fetch.add_argument("paths", metavar="PATH", nargs="*", default=[],
                       help="of a script's run: files or folders it wrote, relative to its "
                       "working directory (default: all of it)")
    fetch.add_argument("--all-hosts", action="store_true",
                       help="of a script's run: from every host, not only rank 0's")
    what = fetch.add_mutually_exclusive_group()
    what.add_argument("--final", action="store_true",
                      help="the final model/adapter (RUN_DIR/final/; the default but for a "
                      "script's run)")
    what.add_argument("--checkpoint", action="store_true",
                      help="the newest checkpoint instead")
    add_logs_parser(command)


def add_logs_parser(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``corral logs``: a run's every output line from this machine's copy, searched."""
    logs = command("logs", "Print what a run's ranks and launchers printed, every line of "
                   "every host from this machine's copy (live or past runs), as "
                   "host:rank or host:launcher then the text; searched by regex with --grep.")
    logs.add_argument("run_id", metavar="RUN", nargs="?",
                      help="run id or name (default: the newest run)")
    logs.add_argument("--host", metavar="H", action="append", default=[],
                      help="only this host's lines (repeatable)")
    logs.add_argument("--grep", metavar="RE",
                      help="only the lines matching this Python regular expression (searched "
                           "in `host:rank text`; case-sensitive, (?i) makes it not); none "
                           "matching: says 'no match' and what it searched, exit 1")
    logs.add_argument("--failure", action="store_true",
                      help="start at the first traceback or failed worker (exit 1 if none)")
    logs.add_argument("--follow-command", action="store_true",
                      help="print, per host, the `ssh HOST 'tail -F FILE'` command that "
                           "follows its log live, instead of the lines")


async def cmd_report(args: argparse.Namespace, console: Console) -> int:
    """Print one run's report, or a comparison of several (``--json``: machine-readable)."""
    from console import report
    from remote.api import SCHEMA_VERSION, summary_to_json

    session = Session(args.config)
    # A run nobody follows says how it ended only on its hosts: asked first, as status does.
    infos, unverified = await session.runs_as_they_ended(args.runs)
    runs = [session.summary(info.run_id)[1:] for info in infos]
    if args.plot is not None:
        from console.plot_png import write_plot

        written = write_plot(args.plot, runs)
        if not args.json:
            console.print(f"plot written to {escape(str(written))}")
    if args.json:
        body = {"schema": SCHEMA_VERSION, "runs": [summary_to_json(s) for s, _ in runs]}
        console.print_json(json.dumps(body, allow_nan=False))
        return 0
    if unverified:
        console.print(f"note: the hosts of {', '.join(unverified)} could not be reached; "
                      "its state is the one last recorded on this machine")
    width = min(console.width, 120)
    for summary, series in runs:
        console.print(report.one_run(summary, series if args.chart else None, width=width))
        console.print()
    if len(runs) > 1:
        console.print(report.comparison([s for s, _ in runs]))
    return 0


async def cmd_tensorboard(args: argparse.Namespace, console: Console) -> int:
    """Write TensorBoard files for the runs, then serve them (until Ctrl-C)."""
    import sys

    from remote.api import board_command, board_label, convert_run, local_run_dir

    session = Session(args.config)
    config = session.config
    infos = session.runs(args.runs) if args.runs else session.recorded_runs()
    if not infos:
        raise UsageError("no runs of this cluster yet; start one with `corral run`",
                         title="no runs")
    served = []
    for info in infos:
        run_dir = local_run_dir(config, info.run_id)
        written = convert_run(run_dir)
        what = ("being followed: written live" if written.points < 0
                else f"{written.points} points")
        console.print(f"{escape(info.label)}: {what} in {escape(str(written.directory))}")
        served.append((board_label(info.run_id, info.name), run_dir))
    command = board_command(sys.executable, served, args.port)
    if args.write_only:
        console.print("start TensorBoard with:  " + escape(shlex.join(command)))
        return 0
    console.print(f"TensorBoard on http://localhost:{args.port}/ (Ctrl-C ends it)")
    return serve(command)


def serve(command: list[str]) -> int:
    """Run ``command`` (TensorBoard) until it ends; corral ended by Ctrl-C, SIGTERM or SIGHUP
    ends it first, so nothing is left serving on the port. Its exit status (128 + the signal
    when a signal ended corral)."""
    import signal
    import subprocess

    child = subprocess.Popen(command)
    received: list[int] = []

    def end_child(signum: int, _frame: object) -> None:
        received.append(signum)
        child.terminate()

    caught = (signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, end_child) for signum in caught}
    try:
        status = child.wait()
    except KeyboardInterrupt:
        received.append(signal.SIGINT)
        status = 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return 128 + received[0] if received else status


async def cmd_fetch(args: argparse.Namespace, console: Console) -> int:
    """Copy the final model (or newest checkpoint) of a run here, verified; of a script's
    run, its outputs (its working directory, or PATHs in it)."""
    from remote.api import fetch_outputs, fetch_results, is_script_run

    session = Session(args.config)
    config, info = session.config, session.runs([args.run_id])[0]
    outputs = bool(args.paths or args.all_hosts)
    if outputs and (args.final or args.checkpoint):
        raise UsageError("PATH and --all-hosts fetch a script's own files; leave out --final "
                         "and --checkpoint", title="bad options")

    def say(line: str) -> None:
        console.print(escape(line))

    script = is_script_run(config, info)
    if outputs and not script:
        raise UsageError(f"run {info.run_id} ran corral's own task: PATH and --all-hosts fetch "
                         "what a script wrote; its results are --final (the default) and "
                         "--checkpoint", title="bad options")
    if outputs or (script and not (args.final or args.checkpoint)):
        results = await fetch_outputs(config, info, args.paths, all_hosts=args.all_hosts,
                                      progress=say)
    else:
        results = [await fetch_results(config, info, progress=say,
                                       what="checkpoint" if args.checkpoint else "final")]
    for result in results:
        console.print(f"{result.files} file(s), {result.bytes} bytes from {escape(result.host)} "
                      f"into {escape(str(result.directory))}; sha256 verified"
                      + (f" ({result.resumed} resumed)" if result.resumed else "")
                      + (f"; {result.left_out} left out (links out of the run's directory, "
                         "special files)" if result.left_out else ""))
    return 0


async def cmd_logs(args: argparse.Namespace, console: Console) -> int:
    """Print a run's log lines (or the matching ones, or the commands that follow them)."""
    from remote.api import (
        collateral_sources,
        compile_search,
        culprit_line,
        follow_log_command,
        local_run_dir,
        run_log_lines,
        search_lines,
    )

    pattern = compile_search(args.grep) if args.grep is not None else None
    session = Session(args.config)
    info = session.runs([args.run_id or session.unnamed_run()])[0]
    unknown = [h for h in args.host if h not in info.hosts]
    if unknown:
        raise UsageError(f"--host {unknown[0]}: not a host of run {info.label} (its hosts: "
                         f"{', '.join(info.hosts)})", title="unknown host")
    hosts = args.host or list(info.hosts)
    if args.follow_command:
        for host in hosts:
            console.print(follow_log_command(session.config, info.run_id, host),
                          markup=False, highlight=False, soft_wrap=True)
        return 0
    lines = run_log_lines(local_run_dir(session.config, info.run_id), hosts)
    if not lines:
        console.print(f"no log lines of run {info.label} on {', '.join(hosts)} copied here "
                      "(yet)", markup=False, highlight=False, style="yellow")
        return 1
    searched = len(lines)
    if args.failure:
        start = culprit_line(lines, *_culprit(session, info.run_id))
        collateral = collateral_sources(lines, start)
        lines = lines[start:] if start is not None else []
        if start is not None and not pattern:
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                f"first failure: {lines[0].source} line {lines[0].number}"
                + (f"; collateral (they followed from it): {', '.join(collateral)}"
                   if collateral else ""), markup=False, style="yellow")
    shown = ([lines[i] for i in search_lines(lines, pattern)] if pattern is not None
             else lines)
    for line in shown:
        # The ranks' colours where this terminal shows them (rich drops them on a pipe, a
        # file or under NO_COLOR); every other control code is gone (remote.terminal_text).
        console.print(Text(f"{line.source} ").append_text(Text.from_ansi(line.text)),
                      highlight=False, soft_wrap=True)
    if shown or (pattern is None and not args.failure):
        return 0
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        no_match(args, info.label, hosts, searched), markup=False, style="yellow")
    return 1


def _culprit(session: Session, run_id: str) -> tuple[str | None, int | None]:
    """The host and rank the run recorded as failing first for a reason of its own
    (``remote.run.monitor``); (None, None) when it recorded none."""
    try:
        outcome = session.summary(run_id)[1].outcome
    except (CorralError, OSError, ValueError):  # no records here: the logs alone decide
        return None, None
    return outcome.failed_host, outcome.failed_rank


def no_match(args: argparse.Namespace, label: str, hosts: list[str], searched: int) -> str:
    """Why ``corral logs`` printed nothing: what it searched, for what."""
    where = f"{searched} lines of run {label} on {', '.join(hosts)} (this machine's copy)"
    if args.failure and args.grep is None:
        return f"no match: no traceback or failed worker in the {where}"
    after = " after the first traceback or failed worker" if args.failure else ""
    return (f"no match: --grep {args.grep!r} matched none of the {where}{after}, searched as "
            "`host:rank text` (case-sensitive; (?i) makes it not)")


RESULTS_COMMANDS: dict[str, Callable[[argparse.Namespace, Console],
                                     Coroutine[Any, Any, int]]] = {
    "report": cmd_report, "tensorboard": cmd_tensorboard, "fetch": cmd_fetch,
    "mlflow": cmd_mlflow, "aim": cmd_aim, "logs": cmd_logs,
}
"""The commands this module adds, by name (``cli.ASYNC_COMMANDS`` includes them)."""
