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
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from console.cli_parser import build_parser
from console.export_cli import EXPORT_COMMANDS
from console.results_cli import RESULTS_COMMANDS
from console.run_cli import DETACHED_EXIT, RUN_COMMANDS, cmd_attach
from console.runner import run_command
from console.session import Session
from console.terminal import ascii_fallbacks
from profiles.user_errors import CorralError, UsageError

# ---- commands ----------------------------------------------------------------------------------


def cmd_console(args: argparse.Namespace, console: Console) -> int:
    """Open the Textual console (imported only now: it is the heaviest import), or serve it
    to a browser (``--serve``; ``--served``: one browser tab's console, started by it)."""
    from console.app import run_console

    if getattr(args, "served", None):
        from console.serve import run_served

        return run_served(args.config, args.served)
    if getattr(args, "serve", False):
        return run_command(_serve(args, console))
    if getattr(args, "port", None) is not None or getattr(args, "controls", False):
        raise UsageError("--port and --controls go with --serve: corral console --serve "
                         "[--port N] [--controls]")
    return run_console(args.config, attach_run=getattr(args, "run_id", None))


async def _serve(args: argparse.Namespace, console: Console) -> int:
    """``corral console --serve``: the links once, then serve until Ctrl-C."""
    from console.serve import DEFAULT_PORT, ServeLinks, serve_console

    port = DEFAULT_PORT if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is no TCP port: give one from 1 to 65535 (0: any "
                         "free one)")
    _ = Session(args.config).config  # a bad cluster.toml is named before anything listens

    def announce(links: ServeLinks) -> None:
        console.print(f"corral console in a browser, read-only: {links.view}")
        if links.control is not None:
            console.print(f"with its controls (keep this one to yourself): {links.control}")
        console.print("each link works until this command ends (Ctrl-C); from another "
                      "machine: ssh -L (docs/console.md)")

    return await serve_console(args.config, port=port, controls=args.controls,
                               announce=announce)


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
    from remote.api import demo_toml, hosts_toml, script_toml, write_new

    aliases = [a.strip() for a in args.hosts.split(",")] if args.hosts is not None else None
    if args.local is not None:
        if args.local < 1 or aliases is not None:
            raise UsageError("--local takes a number of hosts, 1 or more, without --hosts "
                             "(or name them: --hosts local,local,gpu1)", title="bad --local")
        aliases = ["local"] * args.local
    if args.script is not None:
        script = _script_from(args.script, args.config)
        text = script_toml(script, aliases)
    else:
        text = demo_toml() if aliases is None else hosts_toml(aliases)
    write_new(args.config, text)
    hosts = ("this machine" if aliases is None and args.script is not None
             else "three local hosts" if aliases is None
             else f"{len(aliases)} host(s): {', '.join(aliases)}")
    what = (f"your script {script} on {hosts}" if args.script is not None
            else "the local emulated demo (three local hosts)" if aliases is None else hosts)
    console.print(f"wrote {escape(str(args.config))}: {escape(what)}. Next: `corral check`"
                  + ("" if aliases is None else "; `corral setup` for hosts without torch"))
    return 0


def _script_from(script: Path, config: Path) -> str:
    """``--script FILE`` (from the working directory) as ``[run] script``: a path from the
    folder of the cluster.toml to write; a missing file is named as such."""
    from remote.api import script_argument

    path = script_argument(script)
    return Path(os.path.relpath(path, config.expanduser().absolute().parent)).as_posix()


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


def cmd_notify(args: argparse.Namespace, console: Console) -> int:
    """``corral notify --test``: one notice sent and waited for; 1 when it was not sent."""
    from remote.api import send_test_notice

    config = Session(args.config).config
    problems = send_test_notice(config)
    for line in problems:
        console.print(escape(line))
    if not problems:
        console.print(f"sent a test notice to {len(config.notify.urls)} URL(s)")
    return 1 if problems else 0


ASYNC_COMMANDS = {
    "status": cmd_status, "profile": cmd_profile, "trust": cmd_trust, "setup": cmd_setup,
    **RUN_COMMANDS, **RESULTS_COMMANDS, **EXPORT_COMMANDS,
}


def dispatch(args: argparse.Namespace, console: Console) -> int:
    """Run the command ``args`` names and return its exit status."""
    if args.command in (None, "console") or (args.command == "attach" and not args.headless):
        return cmd_console(args, console)
    if args.command == "attach":
        return run_command(cmd_attach(args, console))
    if args.command == "init":
        return cmd_init(args, console)
    if args.command == "notify":
        return cmd_notify(args, console)
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
    if unknown and args.command == "fetch":  # PATHs after an option: argparse leaves them
        args.paths += [word for word in unknown if not word.startswith("-")]
        unknown = [word for word in unknown if word.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``corral`` console script and ``python -m console``."""
    ascii_fallbacks()  # any locale: what its encoding cannot show, in ASCII, never a traceback
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
