"""Stop a run on every host and verify that nothing of it is left.

Per host: TERM to the launcher's whole process group (``hosts/<host>.pgid``); torchrun passes
it on to the ranks, which finish their step, write a checkpoint and exit. After the grace period
whatever is left gets KILL: the launcher's group and every rank of the run (torchrun starts each
rank in a session of its own, so a rank outlives a killed launcher). Then what remains is counted.
The launcher's session as found at the stop's start is waited for, KILLed and counted whatever
its members' command lines: on a host with a container its leader (the host's shell) ends with
the engine's client, and what the client started (a start that hung) must not be left behind
or go uncounted.

The recorded group is signalled only while it is still the run's own: right before each signal
the script checks that the group leader's start time (``/proc/<pgid>/stat``) is the one
recorded at launch (``hosts/<host>.leader``) and that its command line carries the whole run
id, and never once the launcher has written its exit file. A process id reused by a stranger
(after a reboot, or simply much later) fails that check and is left alone.

Processes of the run are found by their command line: torchrun carries ``--rdzv-id <run id>``
and every rank ``--run-dir <run_root>/<run id>``. The pattern demands one of those flags right
before the whole run id (a run id that merely ends with it does not match), so it never matches
another run, another user's job or the tailers.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from pathlib import Path

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig, HostSection
from remote.events import StopReport
from remote.hosts import container
from remote.hosts.pool import HostPool
from remote.hosts.transport import Transport, shell_path
from remote.records.runs import local_run_dir, run_dir_for
from trainer.events import EventFormatError, RoundEvent, parse_event
from trainer.launch_contract import STOP_WAIT_LIMIT_S
from trainer.run_layout import IN_RUN_DIR, RunLayout

logger = logging.getLogger(__name__)

KILL_WAIT_S = 5
"""Seconds allowed for processes to vanish after KILL."""


TAIL_READ_BYTES = 256 * 1024
"""How much of the end of rank 0's copied events ``round_grace`` reads for the newest round."""


def newest_round(lines: list[str]) -> RoundEvent | None:
    """The newest ``round`` event among rank 0's event ``lines`` (a torn line is skipped)."""
    newest: RoundEvent | None = None
    for line in lines:
        try:
            event = parse_event(line)
        except EventFormatError:  # a torn first line of the tail read, say
            continue
        if isinstance(event, RoundEvent) and (newest is None or event.t > newest.t):
            newest = event
    return newest


def round_wait(newest: RoundEvent | None, grace_s: float) -> tuple[float, str]:
    """The grace of a stop of a low-communication run (``exchange = "local"``), whose ranks
    stop at the end of the round under way (islands do not talk mid-round): twice the newest
    round's time beyond ``grace_s``, at most ``STOP_WAIT_LIMIT_S``; and the line that says so
    ("" when ``grace_s`` is enough: no round seen yet)."""
    if newest is None:
        return grace_s, ""
    wait = min(grace_s + 2 * newest.round_s, max(grace_s, STOP_WAIT_LIMIT_S))
    return wait, (f'exchange = "local": the ranks stop at the end of the round under way '
                  f"(the last took {newest.round_s:.0f} s), with its checkpoint; waiting up "
                  f"to {wait:.0f} s before they are killed")


def round_grace(local_dir: Path, grace_s: float) -> tuple[float, str]:
    """``round_wait`` from rank 0's ``round`` events in this machine's copy of the run."""
    lines: list[str] = []
    for events in Path(local_dir).glob(f"{RunLayout.COLLECTED}/*/{IN_RUN_DIR.events(0)}"):
        try:
            with open(events, "rb") as handle:
                handle.seek(max(handle.seek(0, 2) - TAIL_READ_BYTES, 0))
                lines += handle.read().decode("utf-8", "replace").splitlines()
        except OSError:
            continue
    return round_wait(newest_round(lines), grace_s)


def stop_wait(config: ClusterConfig, run_id: str, grace_s: float) -> tuple[float, str]:
    """The grace a stop of ``run_id`` gives its ranks when ``grace_s`` was asked for, and the
    line that says why when it is longer (``round_grace``: a low-communication run)."""
    if config.run.exchange != "local":
        return grace_s, ""
    return round_grace(local_run_dir(config, run_id), grace_s)


async def stop_wait_on_hosts(config: ClusterConfig, pool: HostPool, run_id: str,
                             grace_s: float) -> tuple[float, str]:
    """``stop_wait``; for a low-communication run this machine has no round of (a run
    launched with ``--detach``, never followed since), rank 0's newest round as the master's
    host holds it: a detached run's stop finishes the round under way and checkpoints too."""
    wait, said = stop_wait(config, run_id, grace_s)
    if said or config.run.exchange != "local":
        return wait, said
    events = f"{run_dir_for(config, run_id)}/{IN_RUN_DIR.events(0)}"
    try:
        transport = await pool.get(config.master_name)
        done = await transport.run(f"tail -c {TAIL_READ_BYTES} {shell_path(events)} "
                                   "2>/dev/null || true", timeout=30.0)
    except (CorralError, OSError, asyncio.TimeoutError) as exc:  # the stop says it too
        logger.warning("could not read the newest round of %s: %s", run_id, exc)
        return wait, said
    return round_wait(newest_round(done.stdout.splitlines()), grace_s)


def run_pattern(run_id: str) -> str:
    """An extended regex matching command lines of this run's launchers and ranks only.

    The leading ``[-]`` keeps the pattern from matching the shell command that carries it.
    """
    escaped = run_id.replace(".", "[.]")
    return f"[-]-(rdzv-id[ =]|run-dir[ =]([^ ]*/)?){escaped}( |/|$)"


def owned_group_function(run_dir: str, host_name: str) -> str:
    """Shell code: ``pg`` (the recorded process group, empty once the launcher has exited) and
    ``owned``, true only while that group's leader is the run's launcher: the start time
    recorded at launch and a command line matching ``$pat`` (which the caller sets).

    Call ``owned`` right before every signal to the group: the check and the signal are then
    microseconds apart, instead of the hours a recorded id may have aged."""
    pgid_file = shlex.quote(IN_RUN_DIR.host_file(host_name, "pgid"))
    leader_file = shlex.quote(IN_RUN_DIR.host_file(host_name, "leader"))
    exit_file = shlex.quote(IN_RUN_DIR.host_file(host_name, "exit"))
    return (
        f"pg=; st=; if cd {shell_path(run_dir)} 2>/dev/null && [ ! -e {exit_file} ]; then "
        f"pg=$(cat {pgid_file} 2>/dev/null); st=$(cat {leader_file} 2>/dev/null); fi; "
        'case "$pg" in ""|*[!0-9]*) pg= ;; esac; '
        f'owned() {{ [ -n "$pg" ] && [ -n "$st" ] && [ ! -e {exit_file} ] && '
        's=$(cat "/proc/$pg/stat" 2>/dev/null) && s=${s##*") "} && set -- $s && '
        '[ "${20}" = "$st" ] && tr "\\0" " " <"/proc/$pg/cmdline" 2>/dev/null '
        '| grep -Eq -- "$pat"; }; '
    )


def launcher_pattern(run_id: str) -> str:
    """``run_pattern`` narrowed to the launcher (torchrun carries ``--rdzv-id``, ranks not)."""
    return f"[-]-rdzv-id[ =]{run_id.replace('.', '[.]')}( |/|$)"


def _term(host: HostSection | None, run_id: str) -> str:
    """Shell: the one TERM. torchrun passes it on to the ranks, once (a second TERM makes a
    rank abandon its step), so ranks are signalled directly only without a launcher. In a
    container the recorded group is the host's shell and the engine's client, whose TERM
    would reach only the container's first process (``sh``, which as a namespace's init
    ignores it): TERM goes to torchrun itself, seen from the host by its command line."""
    if host is not None and host.container is not None:
        return (f"pkill -TERM -f {shlex.quote(launcher_pattern(run_id))} || "
                'pkill -TERM -f "$pat"; ')
    return '{ owned && kill -s TERM -- "-$pg" 2>/dev/null; } || pkill -TERM -f "$pat"; '


def stop_script(run_dir: str, host_name: str, run_id: str, grace_s: float,
                host: HostSection | None = None) -> str:
    """The shell script that stops one host's part of the run and prints what is left
    (``host``: its section, for a host with a container: the run's containers go too)."""
    # Tells the tailers that this launcher ends because it was stopped, not by a failure
    # (only while it has not ended by itself: a finished run keeps its outcome), and the
    # launcher the grace it gives its ranks before it KILLs them itself (``trainer.launcher``):
    # the KILL comes even if this script is cut off (its channel lost, corral ended).
    stopped_file = shlex.quote(IN_RUN_DIR.host_file(host_name, "stopped"))
    ticks = max(round(grace_s * 10), 0)  # tenths of a second
    return (
        f"pat={shlex.quote(run_pattern(run_id))}; "
        + owned_group_function(run_dir, host_name)
        + f'[ -n "$pg" ] && echo {grace_s:g} > {stopped_file}; '
        # The group as found now, its leader the run's launcher: its members stay the run's
        # own for the seconds of this stop even once the leader is gone (an id is not reused
        # while a group holds it). In a container, the leader (the host's shell) ends as
        # soon as the engine's client does, and what the client started (a start that
        # hung) lives on in the group with no run id on its command line.
        'g=; owned && g=$pg; ' + GROUP_MEMBERS +
        'alive() { [ -n "$(members)" ] || pgrep -f "$pat" >/dev/null 2>&1; }; '
        + _term(host, run_id) +
        f"i=0; while alive && [ $i -lt {ticks} ]; do sleep 0.1; i=$((i + 1)); done; "
        '[ -n "$g" ] && kill -s KILL -- "-$g" 2>/dev/null; '
        + KILL_RANK_GROUPS +
        'pkill -KILL -f "$pat" 2>/dev/null; '
        "i=0; while alive && "
        f"[ $i -lt {KILL_WAIT_S * 10} ]; do sleep 0.1; i=$((i + 1)); done; "
        + (f"{container.remove_command(host, run_id)}; "
           if host is not None and host.container is not None else "")
        + f'echo "remaining $({count_command(run_id, host, group=True)})"'
    )


def stop_bound(grace_s: float, host: HostSection | None = None) -> float:
    """The longest a stop of one host takes, in seconds, once it is reached: ``grace_s``, the
    ``KILL_WAIT_S`` after KILL, a host's container engine's limits (``container.ENGINE_LIMIT_S``,
    three calls), and 30 s for the command itself; past it the host counts as unreachable and
    the stop ends all the same. Hosts are stopped in parallel."""
    engine = 3 * container.ENGINE_LIMIT_S if host is not None and host.container else 0.0
    return grace_s + KILL_WAIT_S + engine + 30.0


async def stop_host(transport: Transport, run_dir: str, run_id: str, grace_s: float) -> int:
    """Stop the run on ``transport``'s host; return how many of its processes remain."""
    script = stop_script(run_dir, transport.host.name, run_id, grace_s, transport.host)
    done = await transport.run(script, timeout=stop_bound(grace_s, transport.host))
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("remaining "):
            return counted(transport.host.name, line.split()[1])
    raise RuntimeError(f"stop on {transport.host.name} printed no count: {done.stderr[-300:]}")


KILL_RANK_GROUPS = ('for p in $(pgrep -f "$pat"); do '
                    '[ "$(ps -o pgid= -p "$p" 2>/dev/null | tr -d " ")" = "$p" ] '
                    '&& kill -s KILL -- "-$p" 2>/dev/null; done; ')
"""Shell: KILL the whole process group of every process of the run that leads one (torchrun
starts each rank as a session of its own): what a rank started (a tool it runs, a server it
spawned) goes with it, though its command line names no run."""

GROUP_MEMBERS = ('members() { [ -z "$g" ] || ps -o pid=,stat= -s "$g" 2>/dev/null '
                 "| awk '$2 !~ /^Z/ { print $1 }'; }; ")
"""Shell: ``members`` prints the live processes (not zombies: those are dead, their parent
has yet to reap them) of session ``$g``, the launcher's (``setsid`` made its group a session)."""


def count_command(run_id: str, host: HostSection | None = None, group: bool = False) -> str:
    """A shell command printing how many processes of ``run_id`` run on the host, and on a
    host with a container (``host``), how many of the run's containers it still has.
    ``group``: the members of the launcher's session ``$g`` (``GROUP_MEMBERS``, empty: none)
    count too, whatever their command line."""
    processes = f"pgrep -f {shlex.quote(run_pattern(run_id))} | wc -l"
    if group:
        processes = f"{{ pgrep -f {shlex.quote(run_pattern(run_id))}; members; }} | sort -u | wc -l"
    if host is None or host.container is None:
        return processes
    # ``?`` when the engine cannot say (``container.count_command``): not verified, not 0.
    return (f"c=$({container.count_command(host, run_id)}); p=$({processes}); "
            "case $c in ''|*[!0-9]*) echo '?';; *) echo $((p + c));; esac")


class StopNotVerified(CorralError):
    """The host answered, but its container engine did not: what is left is unknown."""

    title = "stop not verified"


def counted(host: str, word: str) -> int:
    """A count word from the host: its number, or ``StopNotVerified`` for ``?``."""
    if word == "?":
        raise StopNotVerified(f"on {host}: the container engine did not answer within "
                              f"{container.ENGINE_LIMIT_S} s (hung or its daemon is down), so "
                              "whether the run's containers are gone cannot be verified")
    return int(word or 0)


async def count_run_processes(transport: Transport, run_id: str) -> int:
    """How many processes (and containers) of ``run_id`` run on ``transport``'s host;
    ``StopNotVerified`` when its container engine does not answer."""
    done = await transport.run(count_command(run_id, transport.host),
                               timeout=container.ENGINE_LIMIT_S + 30.0)
    return counted(transport.host.name, done.stdout.strip())


async def stop_run(
    pool: HostPool, run_dir: str, run_id: str, *, grace_s: float = 10.0,
    hosts: list[str] | None = None,
) -> StopReport:
    """Stop ``run_id`` on every host (or ``hosts``) in parallel and report what is left."""

    async def one(transport: Transport) -> int:
        return await stop_host(transport, run_dir, run_id, grace_s)

    results = await pool.gather(one, hosts)
    remaining: dict[str, int] = {}
    unreachable: list[str] = []
    unverified: list[str] = []
    for host, result in results.items():
        if isinstance(result, StopNotVerified):
            unverified.append(host)
        elif isinstance(result, BaseException):
            if isinstance(result, asyncio.CancelledError):
                raise result
            unreachable.append(host)
            logger.warning("could not stop run %s on %s: %s", run_id, host, result)
        else:
            remaining[host] = result
    return StopReport(run_id=run_id, remaining=remaining, unreachable=tuple(unreachable),
                      unverified=tuple(unverified))
