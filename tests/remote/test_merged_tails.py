"""The merged tails of a run end when their reader stops, even when a tail lets a cancel slip.

Python < 3.12's ``asyncio.wait_for`` (a tail's silence limit) drops a cancel that lands as its
read completes; the tail of a running run then reads on, and a ``corral run`` told to detach by
SIGTERM waited for it for ever (once in a CI run of the ways-out tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from remote.run.stream import RankOwned, TailFailed, merged

DEADLINE_S = 10.0


async def _tail_that_drops_one_cancel(reads: list[int]) -> AsyncIterator[RankOwned]:
    """A host's tail of a running run: an item every few milliseconds, for ever; the first
    cancel it meets is dropped, as ``wait_for`` drops one whose read has just completed."""
    dropped = False
    while True:
        try:
            await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            if dropped:
                raise
            dropped = True
        reads.append(1)
        yield RankOwned(host="h1", rank=1)


async def test_the_merged_tails_end_when_a_tail_drops_a_cancel() -> None:
    reads: list[int] = []
    stream = merged([("h1", _tail_that_drops_one_cancel(reads))])
    first = await anext(stream)
    assert isinstance(first, RankOwned)
    await asyncio.wait_for(stream.aclose(), DEADLINE_S)  # the reader stops: every tail ends
    after = len(reads)
    for _ in range(20):  # let any task still alive run: none may read again
        await asyncio.sleep(0)
    assert len(reads) == after, "a tail still reads after the merged stream was closed"


async def _tail_that_fails(error: Exception) -> AsyncIterator[RankOwned]:
    yield RankOwned(host="h2", rank=2)
    raise error


async def _tail_of(ranks: int) -> AsyncIterator[RankOwned]:
    for rank in range(ranks):
        await asyncio.sleep(0)
        yield RankOwned(host="h1", rank=rank)


async def test_a_tail_that_fails_is_reported_once_by_host_and_the_others_go_on() -> None:
    error = ConnectionError("h2 went away")
    items = [item async for item in merged([("h1", _tail_of(3)),
                                            ("h2", _tail_that_fails(error))])]
    failed = [item for item in items if isinstance(item, TailFailed)]
    assert failed == [TailFailed(host="h2", error=error)]
    assert sorted(i.rank for i in items if isinstance(i, RankOwned) and i.host == "h1") == [0, 1, 2]
