"""Every command corral sends over SSH, made immune to the account's login shell.

sshd runs a command as ``$SHELL -c COMMAND`` with the account's login shell, whatever it is
(bash, zsh, dash, fish), after that shell's start-up files (a ``~/.bashrc`` printing a notice).
corral's commands are POSIX sh, and it reads their output. So each is sent as
``exec sh -c '…'``, quoted in a form bash, zsh, dash, ksh and fish read alike (single-quoted
pieces; a quote as ``"'"`` and a backslash as ``\\`` outside the quotes, since fish reads ``\\``
inside single quotes as one backslash), and the command's first output is a frame line, on
stdout and on stderr: whatever the login shell printed before it (a banner) is set aside, and
an answer without the frame is a shell that did not run ``sh`` at all.
"""

from __future__ import annotations

import re

from profiles.user_errors import CorralError

FRAME = "@@corral-sh"
"""The line ``sh`` prints first on stdout and stderr; what came before is the login shell's."""
_FRAME_LINE = (FRAME + "\n").encode()
_SPECIAL = re.compile(r"(['\\])")
_CONTROL = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x1f\x7f]")
"""Terminal control sequences (an OSC such as an xterm title, a CSI such as a colour) and
control characters: what a banner shows of them is none of its text."""


class LoginShellRefused(CorralError):
    """The account's login shell did not run corral's ``exec sh -c`` command; ``hint``: the
    fix."""

    title = "login shell"

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(f"{message}; {hint}")
        self.detail = message
        self.hint = hint


def portable_quote(text: str) -> str:
    """``text`` as one word to bash, zsh, dash, ksh and fish alike (no NUL in ``text``)."""
    pieces = []
    for piece in _SPECIAL.split(text):
        if piece == "'":
            pieces.append("\"'\"")
        elif piece == "\\":
            pieces.append("\\\\")
        elif piece:
            pieces.append(f"'{piece}'")
    return "".join(pieces) or "''"


def framed(command: str) -> str:
    """``command`` (POSIX sh) as sent to sshd: run by ``sh`` whatever the login shell, its
    output preceded by the frame line on stdout and stderr."""
    return "exec sh -c " + portable_quote(f"echo {FRAME}; echo {FRAME} >&2; {command}")


def unframed(data: bytes) -> tuple[bytes, bytes | None]:
    """``framed`` output split: what ``sh`` wrote after the frame, and what the login shell
    printed before it (None: no frame, ``sh`` never ran; the first part is then all of it).

    The frame may follow the login shell's output on the same line: a start-up file that
    prints without a newline (an xterm title, ``echo -n``) leaves no line break before it."""
    at = data.find(_FRAME_LINE)
    if at < 0:
        return data, None
    return data[at + len(_FRAME_LINE):], data[:at]


def is_frame(line: str) -> bool:
    """Whether ``line`` (one line of ``framed`` output, without its newline) ends what the
    login shell printed: the frame, after whatever that shell printed on the same line."""
    return line.endswith(FRAME)


SHELL_MARK = "@@corral-shell="
SHELL_QUESTION = f'echo "{SHELL_MARK}$SHELL"'
"""Asked unframed where the frame did not come: a line every login shell's ``-c`` answers,
marked so that what its start-up files printed is not taken for the shell's name."""


def shell_answer(text: str) -> str:
    """The login shell's name from ``SHELL_QUESTION``'s output ("" where it did not say)."""
    at = text.rfind(SHELL_MARK)
    return text[at + len(SHELL_MARK):].splitlines()[0].strip() if at >= 0 else ""


def first_line(text: bytes | str) -> str:
    """The first non-blank line of ``text``, without control characters, at most 80 chars."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    for line in text.splitlines():
        shown = _CONTROL.sub("", line).strip()
        if shown:
            return shown[:80]
    return ""


def refused(host: str, user: str | None, shell: str, said: str) -> LoginShellRefused:
    """The error for a login shell (``shell``, as ``$SHELL`` names it) that did not run
    ``exec sh -c …``; ``said``: the first line it printed."""
    account = user or "the account"
    named = shell or "a shell that does not say"
    return LoginShellRefused(
        f"on {host}: {account}'s login shell ({named}) did not run corral's "
        f"`exec sh -c …` command{f' (it said: {said})' if said else ''}",
        hint=f"give {account} on {host} a shell that runs `sh -c` (bash, zsh, dash, ksh or "
             f"fish): `chsh -s /bin/bash {user or 'USER'}` there")


def banner_warning(shell_said: str) -> str:
    """The check's detail for a login shell that prints on stdout before every command."""
    return (f"warning: the login shell prints before every command: '{shell_said}'; corral "
            "reads past it, but scp, rsync and sftp to this host fail")


BANNER_HINT = ("print it only in interactive shells: in ~/.bashrc put it after the line "
               "`case $- in *i*) ;; *) return;; esac` (or `[[ $- == *i* ]] && echo …`)")
