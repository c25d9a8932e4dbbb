"""``corral check``, ``run``, ``attach`` and ``stop``: a run checked, started, followed and
stopped from this terminal (``console/cli.py`` dispatches to them).

Ctrl-C, SIGTERM and SIGHUP never strand a run: ``FirstInterrupt`` turns the first one into a
stop of a half-launched run or a detach from a running one.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from console.session import Session
from profiles.user_errors import UsageError
from trainer.membership.contract import change_moment

if TYPE_CHECKING:
    from remote.api import CheckReport, RunHandle

DETACHED_EXIT = 130
"""Exit status after Ctrl-C detached the follower from a run that keeps going."""


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
        resume = getattr(args, "resume", False)
        if resume is False:
            return Session(args.config)
        from remote.api import with_recorded_script

        plain = Session(args.config).config  # a resumed script run: its script and arguments
        return Session(args.config, config=with_recorded_script(
            plain, resume if isinstance(resume, str) else None))
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
    one, and releases the launch lock, within seconds
    (``tests/remote/scenarios/test_ways_out_sshd.py``).
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
    if args.resume is not False or args.detach or args.policy or args.name:
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
        wait_s, waiting = await handle.stop_wait(args.grace)
        if waiting:
            console.print(f"run {run_id}: {waiting}")
        report = await handle.stop(grace_s=args.grace, wait_s=wait_s)
    if report.clean:
        ended = ", ".join(f"{n} process(es) on {escape(h)}"
                          for h, n in sorted(report.ended.items()))
        done = ("stopped" if not report.outcome else
                f"had already {report.outcome.value}; its leftovers were ended: {ended}" if ended
                else f"had already {report.outcome.value}: nothing to stop")
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


async def cmd_leave(args: argparse.Namespace, console: Console) -> int:
    """Ask a host to leave a running run (``remote.api.leave_host``); a refusal is a
    ``CorralError`` that names why."""
    from remote.api import leave_host

    if args.restart:
        return await leave_by_restart(args, console)
    async with Session(args.config) as session:
        run_id = (session.unnamed_run(live=True, command="leave") if args.run_id is None
                  else args.run_id)
        await leave_host(session.config, run_id, args.host)
        moment = change_moment(session.config.run.exchange)
    console.print(f"run {run_id}: {escape(args.host)} leaves at {moment.leave_at} "
                  f"(`corral attach` shows it go). {moment.leaver}")
    return 0


async def leave_by_restart(args: argparse.Namespace, console: Console) -> int:
    """``corral leave HOST --restart``: a run without live membership stopped on every host
    and launched again (``--resume``) on the others, followed until it runs."""
    from remote.api import leave_by_restart as plan_restart

    async with Session(args.config) as session:
        given = (session.unnamed_run(live=True, command="leave") if args.run_id is None
                 else args.run_id)
        run_id, others = plan_restart(session.config, given, args.host)
        console.print(f"run {run_id}: stopping it on every host, then launching it again "
                      f"without {escape(args.host)} from its newest checkpoint")
        report = await (await session.controller.attach(run_id)).stop()
    if not report.clean:
        console.print(f"[red]run {run_id} did not stop cleanly ({report}): not relaunched[/]")
        return 1
    with FirstInterrupt() as interrupt:
        async with Session(args.config, config=others) as session:
            handle = await session.controller.start(resume=run_id)
            code = await follow_detachable(session, handle, console, interrupt,
                                           until_running=True, launching=True)
    if code == 0:
        console.print(f"run {run_id} runs again on {', '.join(h.name for h in others.hosts)}. "
                      f"Follow it with `corral attach {run_id}`.")
    return code


async def cmd_join(args: argparse.Namespace, console: Console) -> int:
    """Bring a host into a running run (``remote.api.join_host``); a refusal or a failed
    check, push or launch is a ``CorralError`` that names why."""
    from remote.api import join_host

    async with Session(args.config) as session:
        run_id = (session.unnamed_run(live=True, command="join") if args.run_id is None
                  else args.run_id)
        took = await join_host(session.config, run_id, args.host)
        moment = change_moment(session.config.run.exchange)
    console.print(f"run {run_id}: {escape(args.host)} checked, pushed and started in "
                  f"{took:.1f} s; rank 0 lets it in at {moment.join_at} (the run's follower "
                  f"shows it joining, then its ranks). {moment.joiner}")
    return 0


RUN_COMMANDS: dict[str, Callable[[argparse.Namespace, Console],
                                 Coroutine[Any, Any, int]]] = {
    "check": cmd_check, "run": cmd_run, "stop": cmd_stop, "leave": cmd_leave,
    "join": cmd_join,
}
"""The commands this module adds, by name (``cli.ASYNC_COMMANDS`` includes them; ``attach``
is dispatched by ``cli.dispatch``: without ``--headless`` it opens the console)."""
