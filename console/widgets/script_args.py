"""The dialog of the console's ``r`` on a script run: its arguments in an input to edit, with
the script's resume idiom put in when corral recognises it, and the arguments it ran with one
button away. Enter (or Relaunch) relaunches with what the input holds, split as a shell
would (``shlex``); Esc cancels. It dismisses with the arguments, one string each, or None."""

from __future__ import annotations

import shlex
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from console.effects import EditArgs


class ScriptArgsScreen(ModalScreen[tuple[str, ...] | None]):
    """Edit a script run's arguments before its relaunch (``EditArgs``)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    ScriptArgsScreen { align: center middle; }
    ScriptArgsScreen > Vertical {
        width: 90%; height: auto; border: thick $accent; background: $surface; padding: 0 1;
    }
    ScriptArgsScreen .dialog-title { text-style: bold; padding-bottom: 1; }
    ScriptArgsScreen #problem { color: $error; }
    ScriptArgsScreen Horizontal { height: auto; align-horizontal: right; padding-top: 1; }
    ScriptArgsScreen Button { margin-left: 1; min-width: 8; }
    """

    def __init__(self, edit: EditArgs) -> None:
        super().__init__()
        self.edit = edit

    def compose(self) -> ComposeResult:
        edit = self.edit
        first = edit.offered if edit.offered is not None else edit.args
        with Vertical():
            yield Static(edit.title, classes="dialog-title")
            yield Static(Text(edit.question))
            yield Input(shlex.join(first), id="args")
            if edit.offered is not None:
                yield Static(Text(f"Put in: the script's resume idiom {edit.idiom} "
                                  f"({edit.note}). It ran with: {shlex.join(edit.args)}"),
                             id="idiom")
            yield Static("", id="problem")
            yield Static(Text("Enter: relaunch with these arguments   Esc: Cancel"))
            with Horizontal():
                yield Button("Cancel (Esc)", id="cancel")
                if edit.offered is not None:
                    yield Button("As it ran", id="as-before")
                    yield Button(f"Resume: {edit.idiom}", id="offered")
                yield Button("Relaunch (Enter)", id="relaunch", variant="error")

    def on_mount(self) -> None:
        self.query_one("#args", Input).focus()

    @property
    def words(self) -> tuple[str, ...] | None:
        """The input's arguments, split as a shell would (None: unbalanced quotes, said)."""
        try:
            return tuple(shlex.split(self.query_one("#args", Input).value))
        except ValueError as exc:
            self.query_one("#problem", Static).update(
                Text(f"{exc}: close the quote, or quote the argument as a shell would"))
            return None

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._relaunch()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        field = self.query_one("#args", Input)
        if event.button.id == "cancel":
            self.dismiss(None)
            return
        if event.button.id == "as-before":
            field.value = shlex.join(self.edit.args)
        elif event.button.id == "offered" and self.edit.offered is not None:
            field.value = shlex.join(self.edit.offered)
        elif event.button.id == "relaunch":
            self._relaunch()
            return
        field.focus()  # back to the arguments: Enter relaunches with them

    def _relaunch(self) -> None:
        if (words := self.words) is not None:
            self.dismiss(words)

    def action_cancel(self) -> None:
        self.dismiss(None)
