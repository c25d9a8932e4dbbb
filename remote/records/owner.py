"""Which corral process holds something (a launch lock, a launch in a run's record), and
whether that process is gone.

An owner is ``<machine> <pid> <start>``: this machine's name, the process id and its start
time in clock ticks since boot (``/proc/PID/stat`` field 22). A pid alone is not enough: once
the process died its pid may be handed to another one, whose start time differs. An owner on
another machine cannot be checked from here and is never called gone.
"""

from __future__ import annotations

import os
import socket


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def this_owner() -> str:
    """This process as an owner: machine, pid and start time (one word each)."""
    pid = os.getpid()
    return f"{socket.gethostname() or 'localhost'} {pid} {process_start(pid) or 0}"


def owner_gone(owner: str) -> bool:
    """Whether ``owner`` (``this_owner`` of some process) is a process of this machine that
    no longer runs (its pid is free, or held by a process started at another time)."""
    words = owner.split()
    if len(words) != 3 or words[0] != (socket.gethostname() or "localhost"):
        return False
    if not words[1].isdigit():
        return False
    return process_start(int(words[1])) != words[2]


def owner_pid(owner: str) -> str:
    """The pid word of ``owner`` (for messages)."""
    words = owner.split()
    return words[1] if len(words) > 1 else "?"
