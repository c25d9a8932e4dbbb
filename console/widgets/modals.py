"""Modal screens: confirmations, the pre-flight check table, messages, help, quit."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Static

from console.formatting import estimate_text
from console.plan_view import plan_renderable
from remote.api import CheckReport


class _Dialog(ModalScreen[object]):
    """A centred box with a title, a body and a row of buttons; Esc dismisses with None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss_none", "Close")]
    DEFAULT_CSS = """
    _Dialog { align: center middle; }
    _Dialog > Vertical {
        width: auto; max-width: 90%; min-width: 40; height: auto; max-height: 90%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    _Dialog .dialog-title { text-style: bold; padding-bottom: 1; }
    _Dialog VerticalScroll { height: auto; max-height: 20; }
    _Dialog Horizontal { height: auto; align-horizontal: right; padding-top: 1; }
    _Dialog Button { margin-left: 1; min-width: 8; }
    """

    def __init__(self, title: str, body: Text | str,
                 buttons: Iterable[tuple[str, str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.buttons = list(buttons)
        """``(id, label, variant)`` per button; pressing one dismisses with its id."""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, classes="dialog-title")
            with VerticalScroll():
                yield from self.compose_body()
            with Horizontal():
                for button_id, label, variant in self.buttons:
                    yield Button(label, id=button_id, variant=variant)  # type: ignore[arg-type]

    def compose_body(self) -> ComposeResult:
        # Plain strings are shown as they are (a "[l]" key hint is not markup).
        yield Static(Text(self.body) if isinstance(self.body, str) else self.body)

    def on_mount(self) -> None:
        self.query(Button).first().focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class ConfirmScreen(_Dialog):
    """Ask before something disruptive; dismisses with ``"yes"`` or None.

    Every confirmation works the same way (stop, restart): ``y`` does it, ``n`` or Esc
    cancels, and Enter presses the highlighted button, which starts on Cancel so that a stray
    Enter never stops a run. The dialog says so."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer('yes')", "Yes"), Binding("n", "answer('no')", "No")]

    def __init__(self, title: str, question: str, *, yes: str = "Yes") -> None:
        keys = (f"\n\n[y] {yes}   [n] or Esc: Cancel   Enter: the highlighted button "
                "(Cancel until you move with Tab or the arrows)")
        super().__init__(title, question + keys,
                         [("no", "Cancel (n)", "default"), ("yes", f"{yes} (y)", "error")])

    def action_answer(self, answer: str) -> None:
        self.dismiss(answer if answer == "yes" else None)


class QuitScreen(_Dialog):
    """Quitting with a live run: detach (the run goes on), stop it, or cancel."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("d", "choose('detach')", "Detach"),
                Binding("s", "choose('stop')", "Stop run")]

    def __init__(self, run_id: str) -> None:
        super().__init__(
            "Quit with a live run",
            f"Run {run_id} is still live.\n\n[d] Detach: the run goes on; reattach later with "
            f"`corral attach {run_id}`.\n[s] Stop it on every host, then quit.\n"
            "Esc: Cancel   Enter: the highlighted button (Cancel until you move with Tab "
            "or the arrows)",
            [("cancel", "Cancel (Esc)", "default"), ("stop", "Stop run (s)", "error"),
             ("detach", "Detach (d)", "primary")],
        )

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


class HostChoiceScreen(_Dialog):
    """Which host: one button per host (its name), Cancel first; ``chosen`` reads the
    answer it dismisses with."""

    def __init__(self, title: str, question: str, hosts: Iterable[str]) -> None:
        names = list(hosts)
        super().__init__(title, question + "\n\nEsc: Cancel",
                         [("cancel", "Cancel (Esc)", "default"),
                          *((f"host-{i}", name, "primary") for i, name in enumerate(names))])
        self.names = names

    def chosen(self, answer: object) -> str | None:
        """The host whose button dismissed the dialog (``answer``), or None."""
        if not isinstance(answer, str) or not answer.startswith("host-"):
            return None
        return self.names[int(answer.removeprefix("host-"))]


class MessageScreen(_Dialog):
    """A message (an error with its fix, a stop report) with one OK button."""

    def __init__(self, title: str, body: Text | str) -> None:
        super().__init__(title, body, [("ok", "OK", "primary")])


class CheckReportScreen(_Dialog):
    """The pre-flight check as a table: host, check, result, detail, and the fix for failures;
    below it, when the check passed, the launch plan ``corral run --dry-run`` prints."""

    def __init__(self, report: CheckReport, *, title: str = "Pre-flight check") -> None:
        verdict = "all checks passed" if report.ok else f"{len(report.failures())} failed"
        super().__init__(f"{title}: {verdict}", "", [("ok", "OK", "primary")])
        self.report = report

    def compose_body(self) -> ComposeResult:
        table: DataTable[Text | str] = DataTable(zebra_stripes=True, cursor_type="row")
        table.add_columns("host", "check", "ok", "detail", "fix")
        for item in self.report.items:
            mark = Text("ok", style="green") if item.ok else Text("FAIL", style="bold red")
            table.add_row(item.host, item.name, mark, item.detail, item.hint)
        for verdict in self.report.estimate:  # information, never a failure
            table.add_row(verdict.host, "estimate", Text("info", style="cyan"),
                          estimate_text(verdict), "")
        for host, line in self.report.modes:  # exact / local (approximate) / sit out
            table.add_row(host, "modes", Text("info", style="cyan"), line, "")
        yield table
        if self.report.plan is not None:
            yield Static(plan_renderable(self.report.plan), classes="launch-plan")


HELP_TEXT = """\
[b]Keys[/b]
  s       start a run: check, push, launch (shown per host)
  x       stop the run (asks); every host is verified clean
  e       take a host out of the live run at its next step (asks)
  j       bring a host of cluster.toml into the live run (asks)
  r       restart from the newest checkpoint (asks)
  c       pre-flight check of every host, and the launch plan (run --dry-run)
  p       balancing policy for the next start (cycles)
  l       focus the logs; there, f turns follow on/off
  /       filter the logs by a regex as you type; Enter searches
          every rank's lines of the run on disk (Esc: back to the
          newest lines)
  n, N    the search's next, previous match
  t       every line of the run, the first traceback or failed
          worker in view
  y       copy the ssh HOST 'tail -F FILE' command that follows
          the focused line's host (else the first host)
  z       zoom the logs to the whole screen, and back
  v       show or hide the logs' noise: torch's INFO lines and
          known warnings (hidden at first; the title counts them)
  m       the network: every pair's Mbit/s and round trip each
          way (from the check), the link that limits the
          exchange, and per host what it adds or why it sits out
  h       past runs of this cluster; Enter opens one read-only
  o       the current run's report (averages, moves, charts)
  ctrl+p  command palette with the same actions
  ?       this help
  q       quit; with a live run: detach (it goes on) or stop it
          (in a read-only view, corral console --serve: close it,
          the run goes on; there s x e j r c p answer "read-only view")

[b]Panels[/b]
  Hosts & ranks  per rank: device, backend, local batch,
                 samples/s, utilisation (compute time / step
                 time: the rest is waiting), GPU or CPU use and memory, status.
                 A dead host keeps its last values, greyed.
  Throughput     cluster samples/s (bars) against the ideal
                 (line): the sum of every rank's solo capacity.
                 Compute share = measured / ideal. Once a run has
                 ended: its mean, not the last step's.
  Loss           the global loss (and eval metrics) over steps.
  Balancer       the split per rank, the policy, and each
                 decision: predicted gain, and the gain measured
                 a few steps later.
  Logs           every rank's and launcher's output,
                 prefixed host:rank; noise hidden until v.
"""


class HelpScreen(MessageScreen):
    """Keys and what each panel shows.

    Opaque, unlike the other dialogs: a see-through screen re-renders and tints the whole
    console behind it on every frame, and help is read at leisure, not next to the numbers.
    """

    DEFAULT_CSS = "HelpScreen { background: $background; }"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "dismiss_none", "Close", show=False)]

    def __init__(self) -> None:
        super().__init__("corral console help (arrows, PgUp/PgDn scroll; Esc or Enter closes)",
                         Text.from_markup(HELP_TEXT))

    def on_mount(self) -> None:
        # The text, not the OK button, has the keyboard: arrows and PgUp/PgDn scroll it.
        self.query_one(VerticalScroll).focus()

    def on_screen_resume(self) -> None:
        self.query_one(VerticalScroll).focus()

    def key_enter(self) -> None:
        self.dismiss(None)
