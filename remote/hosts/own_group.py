"""The host-side wrapper that ends a command when corral's channel to it closes.

Closing an SSH channel (what a Ctrl-C'd, killed or timed-out corral leaves behind) does not
end what runs at the other end: sshd only closes the command's pipes, and a command that
neither reads its standard input nor writes yet (a probe whose Python is slow to start) lives
on for as long as it likes. So every command corral runs over SSH without input of its own
goes through this wrapper, a few lines of POSIX sh (run by ``sh`` whatever the login shell:
``remote.hosts.login_shell``):

- the command runs in a process group of its own (``setsid`` where the host has it), so the
  wrapper can end it together with whatever it started, and nothing else;
- a watcher in the wrapper reads the channel's standard input, which corral keeps open for the
  command's whole life and never writes to: its end of file means the channel closed, and the
  watcher KILLs the command's group at once;
- when the command ends on its own, the wrapper stops its watcher and exits with the
  command's status (the channel then closes as before).

Long-lived work is unaffected: the launcher starts itself in a session of its own
(``remote.run.launch``), outside the wrapped group, so a detached console's run trains on;
the tailers and listeners (``stream``) still read the channel as their standard input and end
on its end of file as before, the watcher only makes sure they do. A command given input by
corral (the push's tar, a data probe's question) reads its standard input to the end itself:
it is not wrapped.
"""

from __future__ import annotations

import shlex

_WRAPPER = (
    # fd 3 keeps the channel's stdin: a background job's own stdin is /dev/null in a shell
    # without job control, so the watcher and the command are handed fd 3 explicitly.
    "exec 3<&0; g=; command -v setsid >/dev/null 2>&1 && g=setsid; "
    "$g sh -c {command} {stdin} 3<&- & c=$!; "
    # With setsid, $c leads a group of its own; without it only $c itself can be named.
    "( while read -r _; do :; done; kill -s KILL -- -$c 2>/dev/null || kill -s KILL $c "
    "2>/dev/null ) <&3 >/dev/null 2>&1 & w=$!; exec 3<&-; "
    "wait $c; s=$?; kill $w 2>/dev/null; exit $s"
)


def in_own_group(command: str, *, reads_channel: bool) -> str:
    """``command`` wrapped to run in its own process group, KILLed with that group the moment
    the channel's standard input ends (see the module's docstring).

    ``reads_channel``: the command itself reads the channel as its standard input and ends at
    its end of file (a tailer, a listener); otherwise its standard input is ``/dev/null``.
    The watcher reads the same channel, so such a command waits there for the end only: a line
    sent after the host's env may reach either.
    The caller must keep the channel's standard input open until the command has ended."""
    stdin = "<&3" if reads_channel else "</dev/null"
    return _WRAPPER.format(command=shlex.quote(command), stdin=stdin)
