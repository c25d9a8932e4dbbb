"""The console's run controls: every call to the remote layer, each as work for a worker.

``RunControls`` acts on a ``Session`` (the controller, the followed run and its model) and
never on the app: each key's handler returns effects (``console/effects.py``) that the
console app renders, and check, start, attach, follow, stop, restart and quit are ``Work``
the app runs in workers, so the UI never waits on the network. Errors from the remote layer
become notifications or a modal with their fix, never a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from console.effects import (
    AskQuit,
    ChooseHost,
    Confirm,
    Effects,
    Exit,
    Notice,
    Redraw,
    ShowCheck,
    ShowStop,
    Work,
)
from console.formatting import stop_report_text
from console.model.burst import Burst
from console.script_restart import edit_script_args
from profiles.user_errors import CorralError
from remote.api import CheckReport, RunHandle, StopReport, wants_membership_port
from trainer.membership.contract import ChangeMoment, change_moment

if TYPE_CHECKING:
    from console.session import Session

LEAVABLE_STATES = frozenset({"starting", "running"})
"""The host states in which a host can be asked to leave (its ranks train)."""
IN_RUN_STATES = frozenset({"connecting", "checking", "pushing", "starting", "running",
                           "joining", "done"})
"""The host states of a host in the run: the others (not in it, left, failed) may join."""
EVENTS_PER_YIELD = 200
"""Events absorbed before the stream worker lets the UI run (a replayed backlog)."""
READ_ONLY = "read-only view"
"""The first words of every refusal a read-only console gives a key that would change a run."""


class RunControls:
    """What the console's run keys do, and the state behind them (one action at a time)."""

    def __init__(self, session: Session, *, read_only: bool = False) -> None:
        self.session = session
        self.read_only = read_only
        """A console that watches only (``corral console --serve`` without the control link):
        every key that would start, stop, restart, check or set the policy is refused."""
        self.busy = ""
        """What a control worker is doing now ("" when idle); one at a time."""
        self.last_stop: StopReport | None = None
        self.last_check: CheckReport | None = None
        self.exit_note = ""
        """Printed by ``run_console`` after the app closed (how to reattach, the stop report)."""

    # ---------------------------------------------------------------- the keys
    def start(self) -> Effects:
        return (self.refuse_if_read_only("start a run") or self._refuse_if_busy()
                or self._refuse_if_live("start")
                or self._run("starting", self._start(resume=False)))

    def attach(self, run_id: str) -> Effects:
        return self._run("attaching", self._attach(run_id))

    def stop(self) -> Effects:
        handle = self.session.handle
        if refused := self.refuse_if_read_only("stop the run") or self._refuse_if_busy():
            return refused
        if handle is None or not self.session.model.live:
            return [Notice(message="No live run to stop.", severity="warning")]
        return [Confirm(title="Stop run", question=f"Stop run {handle.run_id} on every host?",
                        yes="Stop", then=lambda: self._confirmed("stopping", self._stop))]

    def leave_host(self) -> Effects:
        """Take a host out of the live run (``corral leave``): which host, then a
        confirmation; the master's host and hosts no longer running are not offered."""
        handle, model = self.session.handle, self.session.model
        if refused := self.refuse_if_read_only("take a host out") or self._refuse_if_busy():
            return refused
        if handle is None or not model.live:
            return [Notice(message="No live run to take a host out of.", severity="warning")]
        config = self.session.config
        if config.run.script is not None and not wants_membership_port(config):  # a restart
            return [Notice(title="A script run restarts", severity="warning", message=(  # a pick
                f"Run {handle.run_id} runs a script as is, so no host can leave it live: "
                "taking one out stops the run on every host and launches it again on the "
                "others from the script's own newest checkpoint (the steps since it run "
                "again). `corral leave HOST --restart` does that."))]
        try:
            master = self.session.config.cluster.master
        except CorralError as exc:  # no readable cluster.toml: its fix, no traceback
            return self.show_error(exc)
        hosts = tuple(h for h in model.host_order
                      if h != master and model.hosts[h].state in LEAVABLE_STATES)
        if not hosts:
            return [Notice(message=f"No host can leave run {handle.run_id}: the master's host "
                           f"{master} cannot, and no other host is running.",
                           severity="warning")]
        run_id = handle.run_id
        return [ChooseHost(title="Take a host out", hosts=hosts,
                           question=f"Which host leaves run {run_id}? (the master's host "
                           f"{master} cannot)", then=lambda host: self._confirm_leave(run_id,
                                                                                      host))]

    def _confirm_leave(self, run_id: str, host: str) -> Effects:
        moment = self._moment()
        return [Confirm(title="Take a host out", yes="Leave",
                        question=f"Take {host} out of run {run_id} at {moment.leave_at}? "
                        f"{moment.leaver}",
                        then=lambda: self._confirmed("leaving", lambda: self._take_out(
                            run_id, host)))]

    async def _take_out(self, run_id: str, host: str) -> Effects:
        from remote.api import leave_host

        try:
            await leave_host(self.session.config, run_id, host)
        except Exception as exc:  # a refusal names why; anything else, no traceback
            return self.show_error(exc, title="Cannot take the host out")
        finally:
            self.busy = ""
        return [Notice(message=f"{host} leaves run {run_id} at {self._moment().leave_at}.",
                       title="Leave asked")]

    def join_host(self) -> Effects:
        """Bring a host of cluster.toml into the live run (``corral join``): which host (one
        not in the run, or one that left), then a confirmation."""
        handle, model = self.session.handle, self.session.model
        if refused := self.refuse_if_read_only("add a host") or self._refuse_if_busy():
            return refused
        if handle is None or not model.live:
            return [Notice(message="No live run to bring a host into.", severity="warning")]
        try:
            names = [h.name for h in self.session.config.hosts]
        except CorralError as exc:  # no readable cluster.toml: its fix, no traceback
            return self.show_error(exc)
        hosts = tuple(h for h in names if h not in model.hosts
                      or model.hosts[h].state not in IN_RUN_STATES)
        run_id = handle.run_id
        if not hosts:
            return [Notice(message=f"Every host of cluster.toml is in run {run_id}.",
                           severity="warning")]
        return [ChooseHost(title="Bring a host in", hosts=hosts,
                           question=f"Which host joins run {run_id}?",
                           then=lambda host: self._confirm_join(run_id, host))]

    def _confirm_join(self, run_id: str, host: str) -> Effects:
        moment = self._moment()
        return [Confirm(title="Bring a host in", yes="Join",
                        question=f"Check {host}, push to it and let it into run {run_id} at "
                        f"{moment.join_at}? {moment.joiner}",
                        then=lambda: self._confirmed("joining", lambda: self._bring_in(
                            run_id, host)))]

    async def _bring_in(self, run_id: str, host: str) -> Effects:
        from remote.api import join_host

        try:
            took = await join_host(self.session.config, run_id, host)
        except Exception as exc:  # a refusal or failed check names why; no traceback
            return self.show_error(exc, title="Cannot bring the host in")
        finally:
            self.busy = ""
        return [Notice(message=f"{host} started in {took:.1f} s: it joins run {run_id} at "
                       f"{self._moment().join_at}.", title="Join started")]

    def _moment(self) -> ChangeMoment:
        """When a leave or a join takes effect in the run (cluster.toml's ``exchange``, as
        the stop's wait reads it)."""
        return change_moment(self.session.config.run.exchange)

    def restart(self) -> Effects:
        if refused := self.refuse_if_read_only("restart the run") or self._refuse_if_busy():
            return refused
        # A script run: its arguments first, to edit (its resume idiom put in).
        if (edit := edit_script_args(self.session, self.relaunch_script)) is not None:
            return edit
        handle = self.session.handle
        run = handle.run_id if handle else "the newest run"
        where = ("in its working directories, where the script finds its own snapshot"
                 if self._runs_a_script() else "from its newest checkpoint")
        question = (f"Stop {run} and restart it {where}?"
                    if self.session.model.live else f"Restart {run} {where}?")
        return [Confirm(title="Restart from checkpoint", question=question, yes="Restart",
                        then=lambda: self._confirmed("restarting", self._restart))]

    def relaunch_script(self, run_id: str, args: tuple[str, ...]) -> Effects:
        """Relaunch script run ``run_id`` with ``args`` (stopping it first when live)."""
        return self._confirmed("restarting", lambda: self._restart(resume=run_id,
                                                                    script_args=args))

    def _runs_a_script(self) -> bool:
        """Whether the cluster.toml runs a user's script (a file that cannot be read: no; the
        restart itself then names what is wrong with it)."""
        try:
            return self.session.has_cluster and self.session.config.run.script is not None
        except CorralError:
            return False

    def check(self) -> Effects:
        return (self.refuse_if_read_only("check the hosts") or self._refuse_if_busy()
                or self._run("checking", self._check()))

    def quit(self) -> Effects:
        handle = self.session.handle
        # A read-only view just closes: the question it would ask offers to stop the run.
        if self.session.model.live and handle is not None and not self.read_only:
            return [AskQuit(run_id=handle.run_id, then=self.quit_answer)]
        return self._run("", self._close())

    def quit_answer(self, choice: object) -> Effects:
        """What the quit question's ``choice`` does: ``detach`` (the run goes on), or ``stop``
        it."""
        handle = self.session.handle
        if choice == "detach" and handle is not None:
            self.exit_note = (f"Run {handle.run_id} goes on, detached; reattach with "
                              f"`corral attach {handle.run_id}`.")
            return self._run("", self._close())
        if choice == "stop":
            return self._refuse_if_busy() or self._run("stopping", self._stop(then_quit=True))
        return []

    # ---------------------------------------------------------------- workers
    def _run(self, label: str, work: Coroutine[Any, Any, Effects], *, group: str = "control",
             exclusive: bool = False) -> Effects:
        """``work`` for a worker, marking the console busy with ``label`` meanwhile."""
        if label:
            self.busy = label
        return [Work(work=work, group=group, exclusive=exclusive)]

    async def _start(self, *, resume: bool | str,
                     script_args: tuple[str, ...] | None = None) -> Effects:
        controller, policy = self.session.controller, self.session.model.next_policy
        try:  # script_args only when edited: a controller of corral's own runs need not take it
            handle = await (controller.start(resume=resume, policy=policy)
                            if script_args is None else
                            controller.start(resume=resume, policy=policy,
                                             script_args=script_args))
        except Exception as exc:  # a CorralError shows its fix; anything else, no traceback
            return self.show_error(exc)
        finally:
            self.busy = ""
        return self._follow_handle(handle)

    async def _attach(self, run_id: str) -> Effects:
        try:
            handle = await self.session.controller.attach(run_id)
        except Exception as exc:
            return self.show_error(exc)
        finally:
            self.busy = ""
        return self._follow_handle(handle)

    def _follow_handle(self, handle: RunHandle) -> Effects:
        self.session.follow(handle)
        return self._run("", self._follow(handle), group="follow", exclusive=True)

    async def _follow(self, handle: RunHandle) -> Effects:
        model = self.session.model
        burst = Burst(model)
        try:
            async for event in handle.events():
                if burst.add(event) % EVENTS_PER_YIELD == 0:
                    await asyncio.sleep(0)  # the burst is applied; the UI runs
        except Exception as exc:
            return self.show_error(exc, title="Lost the run's event stream")
        finally:
            burst.flush()  # what came before the stream ended or failed
        ended: Effects = [Redraw()]
        if model.state == "failed" and model.check_report is not None:
            ended.append(ShowCheck(report=model.check_report,
                                   title="Run failed its pre-flight check"))
        elif model.state == "failed":
            # The detail's first line names the failure; the lines under it are in the logs.
            first = (model.state_detail or "").splitlines()[:1] or ["the run failed"]
            ended.append(Notice(message=first[0], title="Run failed", severity="error",
                                timeout=15))
        elif model.state == "completed":
            ended.append(Notice(message=f"Run {handle.run_id} completed.",
                                title="Run completed"))
        return ended

    async def _stop(self, *, then_quit: bool = False) -> Effects:
        report, shown = await self._stop_live_run()
        if then_quit:
            if report is not None:
                self.exit_note = stop_report_text(report).plain
            return shown + self._run("", self._close())
        return shown

    async def _stop_live_run(self) -> tuple[StopReport | None, Effects]:
        """Stop the followed run; what the hosts were left with, and how it is shown."""
        handle = self.session.handle
        if handle is None:
            self.busy = ""
            return None, []
        model = self.session.model
        model.state = "stopping"
        model.version += 1
        try:
            report = await handle.stop()
        except Exception as exc:
            return None, self.show_error(exc, title="Stop failed")
        finally:
            self.busy = ""
        self.last_stop = report
        if not report.clean:
            return report, [ShowStop(report=report)]
        return report, [Notice(message=stop_report_text(report).plain, timeout=10,
                               title="Run stopped" if not report.outcome else "Nothing to stop")]

    async def _restart(self, *, resume: bool | str = True,
                       script_args: tuple[str, ...] | None = None) -> Effects:
        shown: Effects = []
        if self.session.model.live:
            report, shown = await self._stop_live_run()
            if report is None:
                return shown
        return shown + self._run("starting", self._start(resume=resume,
                                                         script_args=script_args))

    async def _check(self) -> Effects:
        try:
            report = await self.session.controller.check()
        except Exception as exc:
            return self.show_error(exc, title="Pre-flight check failed to run")
        finally:
            self.busy = ""
        self.last_check = report
        return [ShowCheck(report=report)]

    async def _close(self) -> Effects:
        try:
            await self.session.aclose()
        except Exception as exc:  # closing must never keep the operator in
            self.exit_note += f"\n(closing connections: {exc})"
        return [Exit()]

    # ---------------------------------------------------------------- helpers
    def show_error(self, exc: BaseException, *, title: str | None = None) -> Effects:
        """A remote-layer error as a readable notification (its fix hint included)."""
        report = getattr(exc, "report", None)
        if isinstance(report, CheckReport):
            return [ShowCheck(report=report, title=title or "Pre-flight check")]
        if isinstance(exc, CorralError):
            heading, message = title or exc.title, exc.message
        else:
            heading, message = title or "Unexpected error", f"{type(exc).__name__}: {exc}"
        self.session.model.add_log("corral", f"{heading}: {message}", t=self.session.clock(),
                                   level="error")
        return [Notice(message=message, title=heading, severity="error", timeout=20)]

    def _confirmed(self, label: str, work: Callable[[], Coroutine[Any, Any, Effects]]
                   ) -> Effects:
        """Run a confirmed control action, marking the console busy."""
        return self._refuse_if_busy() or self._run(label, work())

    def refuse_if_read_only(self, what: str) -> Effects:
        """A read-only console's answer to a key that would ``what`` (nothing otherwise)."""
        if self.read_only:
            return [Notice(message=f"{READ_ONLY}: you cannot {what} from here; the console "
                           "with its controls can (the control link of `corral console "
                           "--serve --controls`, or `corral console`)", title=READ_ONLY,
                           severity="warning")]
        return []

    def _refuse_if_busy(self) -> Effects:
        if self.busy:
            return [Notice(message=f"Busy {self.busy}; try again in a moment.",
                           severity="warning")]
        return []

    def _refuse_if_live(self, what: str) -> Effects:
        model = self.session.model
        if model.live:
            return [Notice(message=f"Run {model.run_id} is live: stop it (x) before you {what}.",
                           severity="warning")]
        return []
