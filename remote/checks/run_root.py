"""Is ``[cluster] run_root`` usable, here and on every host? (``corral check``'s ``run-root``)

A run writes its events, logs and checkpoints under ``<run_root>/<run id>`` on every host, and
this machine keeps its copy and ``run.json`` under the same path. A path that is not a
directory, cannot be created, is read-only or is on a full disk would otherwise pass the check
and fail later with a traceback; here each is named with its fix. A full disk is always said
the same way: "disk full on HOST at PATH".
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from remote.events import CheckItem
from remote.hosts.transport import shell_path
from remote.records.disk_full import LOCAL, DiskFull
from trainer.disk_full import disk_full_on

MIN_RUN_ROOT_FREE_BYTES = 64 << 20
"""Less free space than this under run_root fails the check (events, logs, checkpoints)."""

__all__ = ["LOCAL", "MIN_RUN_ROOT_FREE_BYTES", "DiskFull", "free_kib_command", "judge",
           "local_item", "probe_command"]
"""``LOCAL`` and ``DiskFull`` live in ``remote/records/disk_full.py`` (the run records below
this layer raise it too); the launch reaches them here."""


FREE_KIB = 'df -Pk "$r" 2>/dev/null | awk \'NR==2{print $4}\''
"""Shell printing the free KiB of the file system holding ``$r`` (nothing where ``df`` fails)."""


def probe_command(run_root: str) -> str:
    """Shell code printing one word about ``run_root`` on a host, and the free KiB for ``ok``:
    ``ok KIB``, ``notdir``, ``nocreate``, ``full``, ``readonly``."""
    return (
        f"r={shell_path(run_root)}; t=\"$r/.corral-write-test.$$\"; "
        'if [ -e "$r" ] && [ ! -d "$r" ]; then echo notdir; '
        'elif ! mkdir -p "$r" 2>/dev/null; then echo nocreate; '
        'elif e=$( (printf x > "$t") 2>&1 ); then rm -f "$t"; '
        f'echo "ok $({FREE_KIB})"; '
        'else rm -f "$t" 2>/dev/null; case "$e" in *"No space"*) echo full ;; '
        # dash's printf says "I/O error" where bash says "No space": no free block is full.
        f'*) if [ "$({FREE_KIB})" = 0 ]; then echo full; else echo readonly; fi ;; esac; fi'
    )



def free_kib_command(path: str) -> str:
    """Shell printing the free KiB where ``path`` is, or would be (its nearest existing
    folder): 0 is a full disk, whatever words the failed command's shell used."""
    return (f"r={shell_path(path)}; while [ ! -e \"$r\" ] && [ \"$r\" != / ]; do "
            f'r=$(dirname "$r"); done; {FREE_KIB}')


def _item(host: str, ok: bool, detail: str, hint: str = "") -> CheckItem:
    # This machine's own item is a cluster-wide one ("*"), like the torch version match.
    label, detail = ("*", f"{LOCAL}: {detail}") if host == LOCAL else (host, detail)
    return CheckItem(host=label, name="run-root", ok=ok, detail=detail, hint=hint)


def judge(host: str, run_root: str, output: str) -> CheckItem:
    """The ``run-root`` check item from ``probe_command``'s output on ``host``."""
    words = output.split()
    word = words[0] if words else "unknown"
    fix = "set [cluster] run_root in cluster.toml to a writable directory with free space"
    if word == "ok":
        free_kib = int(words[1]) if len(words) > 1 and words[1].isdigit() else None
        if free_kib is not None and free_kib * 1024 < MIN_RUN_ROOT_FREE_BYTES:
            return _item(host, False, f"{disk_full_on(host, run_root)} "
                         f"({free_kib} KiB free)", f"free space on {host}, or {fix}")
        shown = f"{free_kib / (1 << 20):.1f} GiB free" if free_kib is not None else "writable"
        return _item(host, True, f"{run_root}: writable, {shown}")
    reasons = {"notdir": "exists but is not a directory", "nocreate": "cannot be created",
               "readonly": "is not writable (read-only or no permission)",
               "full": disk_full_on(host, run_root)}
    reason = reasons.get(word, f"could not be checked ({output.strip()[:80]!r})")
    detail = reason if word == "full" else f"{run_root} {reason}"
    return _item(host, False, detail, fix)


def local_item(run_root: str) -> CheckItem:
    """The ``run-root`` check of this machine, where ``run.json`` and the event copies go."""
    path = Path(run_root).expanduser()
    if path.exists() and not path.is_dir():
        return judge(LOCAL, run_root, "notdir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return judge(LOCAL, run_root, "nocreate")
    probe = path / f".corral-write-test.{os.getpid()}"
    try:
        probe.write_bytes(b"x")
    except OSError as exc:
        return judge(LOCAL, run_root, "full" if exc.errno == errno.ENOSPC else "readonly")
    finally:
        probe.unlink(missing_ok=True)
    return judge(LOCAL, run_root, f"ok {shutil.disk_usage(path).free // 1024}")
