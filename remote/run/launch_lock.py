"""One launch at a time per cluster: a lock directory on the master.

Two ``corral run`` started at the same moment would both pass the leftover check (neither has
processes yet) and run side by side. The launch therefore first creates
``<run_root>/.launch-lock-<cluster>`` on the master (``mkdir`` is atomic) holding the run id and
the time and the corral process holding it (``remote.records.owner``: machine, pid, start
time), and removes it once its hosts run (or the launch failed). A lock whose corral is gone
(killed mid-launch: its pid is free or another process's) is taken over at once, with one line
saying so; a lock held from another machine, which cannot be checked from here, is taken over
once older than ``STALE_AFTER_S`` (``tests/remote/test_dead_corral.py``).
"""

from __future__ import annotations

import shlex
import time

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig
from remote.hosts.pool import HostPool
from remote.hosts.transport import shell_path
from remote.records.owner import owner_gone, owner_pid, this_owner

STALE_AFTER_S = 600.0
"""A launch (check, push, start) never holds the lock this long; an older lock is stale."""


class LaunchLocked(CorralError):
    """Another launch of this cluster holds the lock."""

    title = "another run is launching"


class LockNotMade(CorralError):
    """The master answered, but the lock could not be created there (a read-only or full
    run_root, a path that is not a directory): nothing holds it."""

    title = "cannot take the launch lock"


def lock_path(config: ClusterConfig) -> str:
    """The lock directory on the master (``~`` left for its shell)."""
    return f"{config.cluster.run_root.rstrip('/')}/.launch-lock-{config.cluster.name}"


async def acquire(pool: HostPool, config: ClusterConfig, run_id: str) -> str | None:
    """Take the cluster's launch lock for ``run_id`` or raise ``LaunchLocked``; a line to
    show when a dead corral's lock was taken over, else None."""
    answer = await _try_lock(pool, config, run_id, take_from="")
    if answer == "acquired":
        return None
    words = answer.split()
    holder = words[1] if len(words) > 1 else "unknown"
    owner = " ".join(words[3:6])
    if owner_gone(owner):
        held = " ".join(words[1:])
        if await _try_lock(pool, config, run_id, take_from=held) == "acquired":
            return (f"took over the launch lock of run {holder}: the corral launching it "
                    f"(pid {owner_pid(owner)}) is gone")
    since = (time.strftime(" since %H:%M:%S UTC", time.gmtime(int(words[2])))
             if len(words) > 2 and words[2].isdigit() else "")
    raise LaunchLocked(
        f"run {holder} of cluster {config.cluster.name!r} is being launched{since}: one "
        f"launch at a time, or both would pass the leftover check and run side by side. Wait "
        f"for it (`corral status`), or, if no corral is launching, remove {lock_path(config)} "
        f"on {config.master_name}")


async def _try_lock(pool: HostPool, config: ClusterConfig, run_id: str, *,
                    take_from: str) -> str:
    """One attempt at the lock: ``acquired`` or ``held <owner line>``. ``take_from``: the
    owner line of a dead corral's lock, removed first if it is still that one."""
    master = await pool.get(config.master_name)
    lock = shell_path(lock_path(config))
    owner = shlex.quote(f"{run_id} {time.time():.0f} {this_owner()}")
    stale = shlex.quote(f"{time.time() - STALE_AFTER_S:.0f}")
    dead = (f'[ "$(cat "$l/owner" 2>/dev/null)" = {shlex.quote(take_from)} ] && rm -rf "$l"; '
            if take_from else "")
    # "held": another launch's lock is there; "error": mkdir (or the owner file) failed for
    # a reason of its own, which is said as the shell said it.
    script = (
        f"l={lock}; {dead}"
        'if [ -d "$l" ]; then set -- $(cat "$l/owner" 2>/dev/null); '
        f'[ -n "$2" ] && [ "$2" -lt {stale} ] && rm -rf "$l"; fi; '
        'if e=$(mkdir -p "$(dirname "$l")" 2>&1 && mkdir "$l" 2>&1); then '
        f'if e=$( (echo {owner} > "$l/owner") 2>&1); then echo acquired; '
        'else rm -rf "$l"; echo "error $e"; fi; '
        'elif [ -d "$l" ]; then echo "held $(cat "$l/owner" 2>/dev/null)"; '
        'else echo "error $e"; fi'
    )
    done = await master.run(script, timeout=30.0)
    answer = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if answer == "acquired" or answer.startswith("held"):
        return answer
    why = answer.removeprefix("error").strip() or done.stderr.strip() or "no answer"
    raise LockNotMade(
        f"cannot create the launch lock {lock_path(config)} on {config.master_name}: "
        f"{why}. [cluster] run_root must be a writable directory with free space on the "
        "master (`corral check` tests it)")


async def release(pool: HostPool, config: ClusterConfig, run_id: str) -> None:
    """Remove the lock if ``run_id`` holds it (an unreachable master keeps it until stale)."""
    lock = shell_path(lock_path(config))
    script = (f'l={lock}; set -- $(cat "$l/owner" 2>/dev/null); '
              f'[ "$1" = {shlex.quote(run_id)} ] && rm -rf "$l"; true')
    try:
        master = await pool.get(config.master_name)
        await master.run(script, timeout=30.0)
    except CorralError:
        pass
