"""The chaos run's faults (bench/chaos.py), each injected into a ``ChaosRun`` and followed to
its effect: the change it makes in the run (a host left, joined, the run stopped and resumed)
or the run's end. What each returns is what happened, in words; a wait that did not come raises
``Broken``. The invariants are checked after each by bench/chaos.py.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from bench._chaos_checks import changes
from bench._chaos_plan import Fault
from bench._chaos_run import WAIT_S, Broken, ChaosRun

FILL_HOLD_STEPS = 2
"""Steps the run is given on a full disk (or until it ends, or ``FILL_HOLD_S``) before the
disk is freed again."""
FILL_HOLD_S = 20.0
FILL_NAME = "chaos-fill"


def _changed(run: ChaosRun, seen: int, change: str, host: str) -> bool:
    return any(e.get("change") == change and host in e.get("hosts", [])
               for e in changes(run.run_dir)[seen:])


def _out_or_end(run: ChaosRun, seen: int, host: str, what: str) -> str:
    """Wait for rank 0 to take ``host`` out (or the run to end); what happened."""
    run.wait(f"{host} taken out after {what}",
             lambda: _changed(run, seen, "left", host) or run.ended())
    if _changed(run, seen, "left", host):
        (event,) = [e for e in changes(run.run_dir)[seen:]
                    if e.get("change") == "left" and host in e.get("hosts", [])][:1]
        return f"{host} left at step {event.get('step')} ({event.get('cause')})"
    return "the run ended"


def _kill(run: ChaosRun, fault: Fault, seen: int, what: str) -> str:
    assert fault.host is not None
    pids = run.pids(fault.host, what)
    if not pids:
        raise Broken(f"no {what} of the run on {fault.host} to kill")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return _out_or_end(run, seen, fault.host, f"its {what} was killed")


def _iptables(run: ChaosRun, host: str, *rule: str) -> None:
    node = next(node for node in run.box.nodes if node.name == host)
    subprocess.run(["ip", "netns", "exec", node.netns, "iptables", *rule], check=True,
                   capture_output=True)


def drop_link(run: ChaosRun, fault: Fault, seen: int) -> str:
    """Every packet of the host DROPped (nothing refused, nothing closed) until the survivors
    took it out, then the link restored: its processes must end by themselves."""
    assert fault.host is not None
    for chain in ("INPUT", "OUTPUT"):
        _iptables(run, fault.host, "-A", chain, "-j", "DROP")
    try:
        return _out_or_end(run, seen, fault.host, "its link was DROPped")
    finally:
        _iptables(run, fault.host, "-F")


def fill(path: Path) -> int:
    """Write zeros to ``path`` until its file system is full (ENOSPC); the bytes written."""
    chunk = bytes(1 << 20)
    written = 0
    with open(path, "wb", buffering=0) as out:
        while True:
            try:
                written += out.write(chunk) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return written


def fill_disk(run: ChaosRun, fault: Fault, seen: int) -> str:
    """The run directory's file system filled to the last byte for a few steps, then freed:
    the run goes on or ends naming the cause."""
    at = run.step()
    path = run.box.root / FILL_NAME
    written = fill(path)
    try:
        # A run standing still on a full disk gets the disk back and must go on.
        with contextlib.suppress(Broken):
            run.wait("a full disk held", lambda: run.step() >= at + FILL_HOLD_STEPS
                     or run.ended() or len(changes(run.run_dir)) > seen, FILL_HOLD_S)
        held = run.step()
    finally:
        path.unlink()
    gone = [e for e in changes(run.run_dir)[seen:] if e.get("change") == "left"]
    return (f"{written >> 20} MiB filled the disk at step {at}, freed at step {held}"
            + "".join(f"; {', '.join(e['hosts'])} left ({e.get('cause')})" for e in gone))


def kill_follower(run: ChaosRun, fault: Fault, seen: int) -> str:
    """``corral run`` (or whatever follows the run) SIGKILLed, then ``corral attach``."""
    run.kill_follower()
    run.follow("attach", run.run_id, "--headless")
    run.wait_steps(2)
    if run.follower is not None and run.follower.poll() is not None and not run.ended():
        raise Broken(f"`corral attach` ended (exit {run.follower.returncode}) while the run "
                     "goes on")
    return "the follower killed, `corral attach --headless` follows"


def leave(run: ChaosRun, fault: Fault, seen: int) -> str:
    assert fault.host is not None
    done = run.corral("leave", fault.host, "--run", run.run_id)
    if done.returncode != 0:
        raise Broken(f"`corral leave {fault.host}` failed: {(done.stdout + done.stderr)[-400:]}")
    return _out_or_end(run, seen, fault.host, "`corral leave`")


def join(run: ChaosRun, fault: Fault, seen: int) -> str:
    assert fault.host is not None
    host = fault.host
    done = run.corral("join", host, "--run", run.run_id)
    if done.returncode != 0:
        raise Broken(f"`corral join {host}` failed: {(done.stdout + done.stderr)[-400:]}")
    run.wait(f"{host} joined", lambda: _changed(run, seen, "joined", host) or run.ended())
    return f"{host} joined" if _changed(run, seen, "joined", host) else "the run ended"


def stop(run: ChaosRun) -> str:
    """``corral stop``, its follower's end; what the record says."""
    done = run.corral("stop", run.run_id)
    if done.returncode != 0:
        raise Broken(f"`corral stop` failed: {(done.stdout + done.stderr)[-400:]}")
    run.wait_follower()
    record = run.record()
    if record.get("state") != "stopped":
        raise Broken(f"stopped, yet recorded {record.get('state')!r}: {record.get('detail')}")
    return f"stopped at step {run.step()}"


def resume(run: ChaosRun) -> str:
    """``corral run --resume RUN`` as the follower; returns once the run steps again. A run
    that ended before its first checkpoint has none to resume from (corral says so): a new run
    is started instead, and said ("" otherwise)."""
    at = run.step()
    run.follow("run", "--resume", run.run_id)
    follower = run.follower
    assert follower is not None
    run.wait("the resumed run", lambda: run.step() > at or follower.poll() is not None, WAIT_S)
    if run.step() > at:
        return ""
    if "nothing to resume" in run.log.read_text(errors="replace")[-3000:]:
        run.start()
        return f"; no checkpoint to resume from: a new run {run.run_id} started"
    raise Broken(f"`corral run --resume` ended (exit {follower.returncode}) before a step")


INJECT: dict[str, Callable[[ChaosRun, Fault, int], str]] = {
    "kill_rank": lambda run, fault, seen: _kill(run, fault, seen, "rank"),
    "kill_launcher": lambda run, fault, seen: _kill(run, fault, seen, "launcher"),
    "drop_link": drop_link,
    "fill_disk": fill_disk,
    "kill_follower": kill_follower,
    "leave": leave,
    "join": join,
}
"""Each fault but the stop and ``--resume`` (bench/chaos.py runs that one with the checks of
an ended run between the two)."""
