"""Follow a run on its hosts: one tail channel per host, a local copy of everything received.

Each host runs ``remote/run/tail_script.py`` over one command channel; it prints every new line of
the host's launcher log and of its ranks' event files. Here each line is

1. appended to this machine's copy ``<run dir>/collected/<host>/<path on the host>``, with the
   byte offset reached in the host's file recorded in ``collected/<host>/offsets.json``, and
2. turned into a typed ``RunEvent`` (``RankEvent`` for an event line, ``LogLine`` otherwise).

A later follower (``corral attach``) starts the tailers at the recorded offsets, so it continues
from the last line received, without duplicates or gaps: on open, the copy is cut back to the
state of its last saved offsets, so a line is either in both or in neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from remote.events import LogLine, RankEvent, RunEvent
from remote.hosts.interpreter import python_word
from remote.hosts.ssh import ConnectionLost
from remote.hosts.transport import Transport, shell_path
from remote.records.collected import CollectedCopy
from remote.terminal_text import RankScreen
from trainer.events import EventFormatError, parse_event
from trainer.run_layout import IN_RUN_DIR, HostFile

SILENCE_LIMIT_S = 20.0
"""A tail channel silent this long (heartbeats come every 2 s) counts as a dropped host."""
TAIL_SCRIPT = (Path(__file__).with_name("tail_script.py")).read_text(encoding="utf-8")


@dataclass(frozen=True, kw_only=True)
class LauncherExit:
    """Internal: a host's launcher ended (``status`` is its exit status, ``gone`` or ``lost``)."""

    t: float
    host: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the launcher exited with status 0."""
        return self.status == "0"


@dataclass(frozen=True, kw_only=True)
class RankOwned:
    """Internal: ``rank`` runs on ``host`` (from torchrun's rendezvous result)."""

    host: str
    rank: int


TailItem = RunEvent | LauncherExit | RankOwned


@dataclass(frozen=True, kw_only=True)
class TailFailed:
    """Internal: ``host``'s tail gave up (``merged`` yields it once; the other tails go on)."""

    host: str
    """The host whose tail ended."""
    error: BaseException
    """Why it ended (a lost connection, a tail that could not start)."""


def tailer_paths(host: str) -> dict[str, str]:
    """The host's files the tailer reads, relative to the run directory (see tail_script)."""
    paths = {kind: IN_RUN_DIR.host_file(host, kind) for kind in get_args(HostFile)}
    return {**paths, "launcher_log": IN_RUN_DIR.launcher_log(host),
            "events": IN_RUN_DIR.events("{rank}")}


def tail_args(run_dir: str, host: str, offsets: dict[str, int]) -> str:
    """The tailer's interpreter arguments: its code, the run directory, paths and offsets."""
    return (f"-u -c {shlex.quote(TAIL_SCRIPT)} {shell_path(run_dir)} "
            f"{shlex.quote(json.dumps(tailer_paths(host)))} {shlex.quote(json.dumps(offsets))}")


def tail_command(host_python: str, run_dir: str, host: str, offsets: dict[str, int]) -> str:
    """The command line that starts the tailer on a host (``host_python``: a shell word).

    The tailer needs only the standard library, so when the host's interpreter is missing it
    falls back to ``python3``: the stream then still shows why the launcher could not start.
    """
    args = tail_args(run_dir, host, offsets)
    return (f"for py in {host_python} python3; do "
            f'if command -v "$py" >/dev/null 2>&1; then exec "$py" {args}; fi; done; '
            "echo 'corral: no python to follow the run with' >&2; exit 127")


def _line_events(host: str, path: str, text: str, screen: RankScreen) -> list[RunEvent]:
    """The events of one line of ``host``'s ``path``: a rank's event, or the launcher log's
    lines as a terminal would show them (``screen``: the host's, ``remote.terminal_text``)."""
    now = time.time()
    if path.startswith(f"{IN_RUN_DIR.METRICS}/"):
        try:
            event = parse_event(text)
        except EventFormatError as exc:
            return [LogLine(t=now, host=host, rank=None, text=f"{path}: {exc}")]
        return [RankEvent(host=host, event=event)] if event is not None else []
    return [LogLine(t=now, host=host, rank=line.rank, text=line.text, bar=line.bar,
                    replaces=line.replaces) for line in screen.feed(text)]


async def tail_host(
    transport: Transport, run_dir: str, copy: CollectedCopy,
) -> AsyncIterator[TailItem]:
    """Every new line of one host's run files as events, ending with its ``LauncherExit``.

    Raises ``ConnectionLost`` when the channel ends (or stays silent) before the launcher does.
    """
    host = transport.host
    if host.container is not None:  # in a container: its interpreter, no fallback
        command = f"exec {python_word(host)} {tail_args(run_dir, host.name, dict(copy.offsets))}"
    else:
        command = tail_command(python_word(host), run_dir, host.name, dict(copy.offsets))
    lines = transport.stream(command)
    # A batch is copied and its offsets saved before any of it is shown: whatever a follower
    # showed is in the copy, so a later attach never shows it twice.
    batch: list[TailItem] = []
    screen = RankScreen()
    try:
        while True:
            try:
                record = await asyncio.wait_for(anext(lines), SILENCE_LIMIT_S)
            except StopAsyncIteration:
                raise ConnectionLost(
                    f"the event tail on {host.name} ended before the run did"
                ) from None
            except asyncio.TimeoutError:
                raise ConnectionLost(
                    f"no word from {host.name} for {SILENCE_LIMIT_S:g} s"
                ) from None
            kind, _, rest = record.partition("\t")
            if kind == "L":
                path, offset, text = [*rest.split("\t", 2), "", ""][:3]
                if not offset.isdigit():
                    continue
                events = _line_events(host.name, path, text, screen)
                copy.append(path, text, int(offset), events[0].event
                            if events and isinstance(events[0], RankEvent) else None)
                batch.extend(events)
            elif kind == "O" and rest.strip().isdigit():
                batch.append(RankOwned(host=host.name, rank=int(rest)))
            elif kind in ("F", "X"):
                copy.save()
                for item in batch:
                    yield item
                batch.clear()
                if kind == "X":
                    yield LauncherExit(t=time.time(), host=host.name, status=rest.strip())
                    return
    finally:
        # Lines copied but not yet shown stay unsaved: the next follower sends them again.
        with contextlib.suppress(Exception):
            await lines.aclose()  # type: ignore[attr-defined]


class MergedTails:
    """Items of every host's tail as one stream, in arrival order (``items``); a tail may be
    added while the stream is read (``add``: a host that joins the run live).

    A host whose tail raises yields a ``TailFailed`` once; the others go on.
    """

    def __init__(self, sources: Sequence[tuple[str, AsyncIterator[TailItem]]]) -> None:
        self._queue: asyncio.Queue[TailItem | TailFailed | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = 0
        for name, source in sources:
            self.add(name, source)

    def add(self, name: str, source: AsyncIterator[TailItem]) -> None:
        """Read ``source`` (``name``'s tail) into the stream from now on."""
        self._running += 1
        self._tasks.append(asyncio.create_task(self._pump(name, source)))

    async def _pump(self, name: str, source: AsyncIterator[TailItem]) -> None:
        try:
            async for item in source:
                await self._queue.put(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._queue.put(TailFailed(host=name, error=exc))
        finally:
            await self._queue.put(None)

    async def items(self) -> AsyncGenerator[TailItem | TailFailed, None]:
        """Every item until every tail has ended; the tails are cancelled when left early."""
        try:
            while self._running:
                item = await self._queue.get()
                if item is None:
                    self._running -= 1
                    continue
                yield item
        finally:
            await cancelled(self._tasks)


async def merged(
    sources: Sequence[tuple[str, AsyncIterator[TailItem]]],
) -> AsyncIterator[TailItem | TailFailed]:
    """Items of every host's tail as one stream, in arrival order (``MergedTails``)."""
    async with contextlib.aclosing(MergedTails(sources).items()) as items:
        async for item in items:
            yield item


RECANCEL_S = 0.5
"""How long ``cancelled`` waits for cancelled tasks before it cancels those left again."""


async def cancelled(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and return once every one has ended. A task that goes on is cancelled
    again: Python < 3.12's ``asyncio.wait_for`` (a tail's silence limit) drops a cancel that
    lands as its read completes, and the tail of a running run then reads on for ever."""
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=RECANCEL_S)
    await asyncio.gather(*tasks, return_exceptions=True)


async def remote_sizes(transport: Transport, run_dir: str) -> dict[str, int]:
    """Byte sizes of the host's event files and launcher log (for a resumed run)."""
    log = shlex.quote(IN_RUN_DIR.launcher_log(transport.host.name))
    script = (f"cd {shell_path(run_dir)} 2>/dev/null || exit 0; "
              f"for f in {IN_RUN_DIR.events('*')} {log}; do "
              '[ -f "$f" ] && printf "%s\\t%s\\n" "$f" "$(wc -c < "$f")"; done; true')
    done = await transport.run(script, timeout=30.0)
    sizes: dict[str, int] = {}
    for line in done.stdout.splitlines():
        path, _, size = line.partition("\t")
        if size.strip().isdigit():
            sizes[path] = int(size.strip())
    return sizes


CATCH_UP_LIMIT = 8 << 20
"""The most of one file ``catch_up`` copies; a longer unread part is skipped as before."""


async def catch_up(transport: Transport, run_dir: str, copy: CollectedCopy,
                   sizes: dict[str, int]) -> None:
    """Copy the whole lines of the host's files that this copy never read (up to ``sizes``):
    the last steps and end event a rank wrote as it was stopped, after its follower had
    gone. A resumed run's report then counts every step of each earlier attempt."""
    for path, size in sizes.items():
        offset = copy.offsets.get(path, 0)
        if not offset < size <= offset + CATCH_UP_LIMIT:
            continue
        done = await transport.run(f"cd {shell_path(run_dir)} && tail -c +{offset + 1} "
                                   f"{shlex.quote(path)} | head -c {size - offset}", timeout=30.0)
        if not done.ok:
            continue
        for line in done.stdout.split("\n")[:-1]:  # a line cut short is left unread
            offset += len(line.encode("utf-8")) + 1
            copy.append(path, line, offset)

