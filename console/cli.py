"""The ``corral`` command line: the console by default, and headless commands for scripts.

Every command reads one cluster.toml (``-c FILE``, default ``./cluster.toml``) through a
headless ``Session`` (``console/session.py``, shared with the console app): the cluster, its
controller and which run a command means when none is named. A problem the user can fix (a
``CorralError``) is printed as ``corral: <title>: <message>`` without a traceback, and the
process exits with the error's exit code (2 for bad input or config).
Heavy modules (Textual, asyncssh, torch) are imported only by the command that needs them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from console.cli_parser import build_parser
from console.export_cli import EXPORT_COMMANDS
from console.results_cli import RESULTS_COMMANDS
from console.runner import run_command
from console.session import Session
from profiles.user_errors import CorralError, UsageError

if TYPE_CHECKING:
    from remote.api import CheckReport, RunHandle

DETACHED_EXIT = 130
"""Exit status after Ctrl-C detached the follower from a run that keeps going."""


# ---- commands ----------------------------------------------------------------------------------


def cmd_console(args: argparse.Namespace, console: Console) -> int:
    """Open the Textual console (imported only now: it is the heaviest import)."""
    from console.app import run_console

    return run_console(args.config, attach_run=getattr(args, "run_id", None))


def run_session(args: argparse.Namespace) -> Session:
    """A session on ``-c FILE``; with ``run --script FILE -- ARGS``, that script and its
    arguments in place of ``[run] script`` and ``args``."""
    script, words = getattr(args, "script", None), getattr(args, "script_args", None) or []
    code = getattr(args, "code", None)
    if script is None and code is not None:
        raise UsageError("--code names the folder that travels with --script FILE; give both",
                         title="bad options")
    if script is None:
        if words:
            raise UsageError(f"{' '.join(words)!r}: arguments after -- are a script's; name "
                             "it with --script FILE", title="bad options")
        return Session(args.config)
    from remote.api import with_script

    return Session(args.config,
                   config=with_script(Session(args.config).config, script, words, code))


async def checked(args: argparse.Namespace, console: Console) -> CheckReport:
    """Check every host of the cluster and print the pre-flight table."""
    from console.tables import check_table

    async with run_session(args) as session:
        report = await session.controller.check()
    console.print(check_table(report))
    return report


async def cmd_check(args: argparse.Namespace, console: Console) -> int:
    """Print the pre-flight table; 1 when anything failed."""
    report = await checked(args, console)
    failures = report.failures()
    if failures:
        console.print(f"[red]{len(failures)} check(s) failed[/]; each row says how to fix it.")
        return 1
    console.print("[green]all checks passed[/]")
    return 0


class FirstInterrupt:
    """While active, a Ctrl-C, SIGTERM or SIGHUP sets ``fired`` and cancels ``task`` (if one
    is set) instead of raising KeyboardInterrupt somewhere unknown or ending corral mid-launch:
    each way out of ``corral run`` then stops a half-launched run or detaches from a running
    one, and releases the launch lock, within seconds (``tests/remote/test_ways_out_sshd.py``).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.fired = False
        self.task: asyncio.Future[int] | None = None

    def _fire(self) -> None:
        self.fired = True
        if self.task is not None:
            self.task.cancel()

    def __enter__(self) -> FirstInterrupt:
        for number in self.SIGNALS:
            asyncio.get_running_loop().add_signal_handler(number, self._fire)
        return self

    def __exit__(self, *exc: object) -> None:
        for number in self.SIGNALS:
            asyncio.get_running_loop().remove_signal_handler(number)


async def follow_detachable(session: Session, handle: RunHandle, console: Console,
                            interrupt: FirstInterrupt, *, until_running: bool,
                            launching: bool) -> int:
    """Follow ``handle``; the first Ctrl-C detaches and says how to stop or re-attach.

    ``launching``: this process is launching the run, so a Ctrl-C before it runs stops it.
    """
    from console.follow import follow_run

    model = session.follow(handle)
    if not interrupt.fired:
        interrupt.task = asyncio.ensure_future(
            follow_run(handle, console=console, until_running=until_running, model=model))
        try:
            return await interrupt.task
        except asyncio.CancelledError:
            if not interrupt.fired:
                raise
    run_id = handle.run_id
    if launching and model.state in ("starting", "checking", "pushing", "launching"):
        # Half-launched hosts would wait at the rendezvous for hosts that never come: stop them.
        console.print(f"interrupted before run {run_id} was running: stopping it")
        report = await handle.stop()
        console.print("stopped" if report.clean else f"[red]not clean[/]: {report}")
        return DETACHED_EXIT
    console.print(
        f"detached from run {run_id}; it keeps running on the hosts.\n"
        f"  stop it:    corral stop {run_id}\n"
        f"  follow it:  corral attach {run_id} --headless   (or in the console without "
        f"--headless)"
    )
    return DETACHED_EXIT


async def cmd_dry_run(args: argparse.Namespace, console: Console) -> int:
    """Check the hosts and print the plan a run would follow; start nothing."""
    if args.resume or args.detach or args.policy or args.name:
        raise UsageError("--dry-run shows the launch of cluster.toml as it is; leave out "
                         "--resume, --detach, --policy and --name", title="bad options")
    from console.plan_view import plan_renderable

    report = await checked(args, console)
    if report.plan is None:
        console.print(f"[red]{len(report.failures())} check(s) failed[/]: no launch plan "
                      "until each row's fix is made.")
        return 1
    console.print(plan_renderable(report.plan))
    return 0


async def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """Start a run and follow it (or return once it runs, with ``--detach``)."""
    if args.dry_run:
        return await cmd_dry_run(args, console)
    with FirstInterrupt() as interrupt:  # first: a Ctrl-C from here on never strands a run
        async with run_session(args) as session:
            handle = await session.controller.start(resume=args.resume, policy=args.policy,
                                                    name=args.name)
            name = getattr(handle, "name", "")
            console.print(f"run {handle.run_id}" + (f" ({name})" if name else ""))
            code = await follow_detachable(session, handle, console, interrupt,
                                           until_running=args.detach, launching=True)
    if args.detach and code == 0:
        console.print(f"run {handle.run_id} is running. Follow it with `corral attach "
                      f"{handle.run_id}`, stop it with `corral stop {handle.run_id}`.")
    return code


def _say_resolved(console: Console, session: Session, given: str, run_id: str) -> None:
    """Which run ``given`` named: a run's name (its newest run: names are matched first) or
    the unique start of a run id."""
    if given == run_id:
        return
    from remote.api import list_runs

    named = any(run.name == given for run in list_runs(session.config))
    how = f"the newest run named {given}" if named else "the only run id starting with it"
    console.print(f"{escape(given)} is run {escape(run_id)} ({escape(how)})")


async def cmd_attach(args: argparse.Namespace, console: Console) -> int:
    """Follow a live run in this terminal (``--headless``)."""
    with FirstInterrupt() as interrupt:
        async with Session(args.config) as session:
            handle = await session.controller.attach(args.run_id)
            _say_resolved(console, session, args.run_id, handle.run_id)
            return await follow_detachable(session, handle, console, interrupt,
                                           until_running=False, launching=False)


async def cmd_stop(args: argparse.Namespace, console: Console) -> int:
    """Stop a run; 1 if a host could not be reached or a process survived."""
    async with Session(args.config) as session:
        run_id = session.unnamed_run(live=True) if args.run_id is None else args.run_id
        handle = await session.controller.attach(run_id)
        _say_resolved(console, session, run_id, handle.run_id)
        run_id = handle.run_id
        report = await handle.stop(grace_s=args.grace)
    if report.clean:
        done = (f"had already {report.outcome}: nothing to stop" if report.outcome
                else "stopped")
        console.print(f"run {run_id} {done}; no process of it is left on any host")
        return 0
    for host, count in sorted(report.remaining.items()):
        if count:
            console.print(f"[red]{escape(host)}: {count} process(es) of run {run_id} remain[/]")
    for host in report.unreachable:
        console.print(f"[red]{escape(host)}: unreachable, could not stop or verify[/]")
    for host in report.unverified:
        console.print(f"[red]{escape(host)}: its container engine did not answer: whether run "
                      f"{run_id}'s containers are gone is not verified[/]")
    return 1


async def cmd_status(args: argparse.Namespace, console: Console) -> int:
    """Table of the cluster's runs."""
    from console.tables import runs_table
    from remote.api import bad_records, refresh_runs

    session = Session(args.config)
    for problem in bad_records(session.config):  # a bad run.json is named, never a crash
        console.print(f"note: left out: {escape(problem)}")
    if not session.recorded_runs():
        console.print("no runs yet")
        return 0
    # A run whose follower went away keeps its last recorded state: ask its hosts.
    runs, unverified = await refresh_runs(session.config)
    console.print(runs_table(runs))
    if unverified:
        console.print(f"note: the hosts of {', '.join(unverified)} could not be reached; "
                      "their state is the one last recorded on this machine")
    return 0


async def cmd_profile(args: argparse.Namespace, console: Console) -> int:
    """Benchmark the model on every host; 1 if a host failed."""
    from console.tables import profiles_table
    from remote.api import profile_cluster

    config = Session(args.config).config
    if config.run.script is not None:  # what the table is of, before it
        console.print(escape(
            f"[run] script is set: this measures corral's own model `{config.run.model}` "
            "([run] model) on each host, not your script's; a script's run does not read "
            "these profiles (its shares start equal, and with the opt-in the balancer times "
            "the script's own steps)"))
    results = await profile_cluster(config)
    console.print(profiles_table(results))
    return 0 if all(r.ok for r in results) else 1


async def cmd_setup(args: argparse.Namespace, console: Console) -> int:
    """Set hosts up, showing each host's progress; 1 if a host failed."""
    from remote.api import setup_cluster

    def progress(host: str, message: str) -> None:
        console.print(f"{escape(host)}: {escape(message)}")

    results = await setup_cluster(Session(args.config).config, args.hosts, progress)
    for result in results:
        mark = "[green]ok[/]" if result.ok else "[red]FAILED[/]"
        console.print(f"{escape(result.host)}: {mark} {escape(result.detail)}")
    if all(r.ok and not r.changed for r in results):
        console.print("nothing to change: every host was set up already")
    return 0 if all(r.ok for r in results) else 1


def cmd_init(args: argparse.Namespace, console: Console) -> int:
    """Write a new cluster.toml; an existing file is left alone (exit 2)."""
    from remote.api import demo_toml, hosts_toml, write_new

    aliases = [a.strip() for a in args.hosts.split(",")] if args.hosts is not None else None
    text = demo_toml() if aliases is None else hosts_toml(aliases)
    write_new(args.config, text)
    what = ("the local emulated demo (three local hosts)" if aliases is None
            else f"{len(aliases)} host(s): {', '.join(aliases)}")
    console.print(f"wrote {escape(str(args.config))}: {escape(what)}. Next: `corral check`"
                  + ("" if aliases is None else "; `corral setup` for hosts without torch"))
    return 0


async def cmd_trust(args: argparse.Namespace, console: Console) -> int:
    """Show a host's key and, once confirmed (or with ``--yes``), make it the trusted one;
    1 when the answer was no (or there was none)."""
    from remote.api import trust_host

    answers: list[bool] = []

    def confirm(question: str) -> bool:
        console.print(escape(question), end=" " if not args.yes else "\n")
        if args.yes:
            answers.append(True)
            return True
        console.print("[y/N]", end=" ")
        reply = sys.stdin.readline()
        if not reply:
            console.print("\nno answer (stdin is closed): pass --yes to trust without asking")
        answers.append(reply.strip().lower() in ("y", "yes"))
        return answers[-1]

    message = await trust_host(Session(args.config).config, args.host, confirm)
    console.print(escape(message))
    return 1 if answers and not answers[-1] else 0


ASYNC_COMMANDS = {
    "check": cmd_check, "run": cmd_run, "stop": cmd_stop, "status": cmd_status,
    "profile": cmd_profile, "trust": cmd_trust, "setup": cmd_setup, **RESULTS_COMMANDS,
    **EXPORT_COMMANDS,
}


def dispatch(args: argparse.Namespace, console: Console) -> int:
    """Run the command ``args`` names and return its exit status."""
    if args.command in (None, "console") or (args.command == "attach" and not args.headless):
        return cmd_console(args, console)
    if args.command == "attach":
        return run_command(cmd_attach(args, console))
    if args.command == "init":
        return cmd_init(args, console)
    return run_command(ASYNC_COMMANDS[args.command](args, console))


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line's arguments; a script's options given to ``corral run`` without
    ``--`` are a usage error that shows where they go."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command == "run":
        script = f"--script {args.script} " if args.script is not None else ""
        words = " ".join([*unknown, *args.script_args])
        parser.error(f"corral run has no option {unknown[0]}; a script's own options go "
                     f"after --: corral run {script}-- {words}")
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``corral`` console script and ``python -m console``."""
    args = _parse(argv)
    # soft_wrap: long lines (commands to copy, run ids) are left to the terminal to wrap.
    console = Console(highlight=False, soft_wrap=True)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        return dispatch(args, console)
    except CorralError as exc:
        errors.print(f"[bold red]corral: {escape(exc.title)}:[/] {escape(exc.message)}")
        return exc.exit_code
    except KeyboardInterrupt:
        errors.print("corral: interrupted")
        return DETACHED_EXIT


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
