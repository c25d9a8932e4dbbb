"""``remote.hosts.waits.within``: a bounded wait that never loses a cancel (issue 59: a Ctrl-C
that landed as a host's connection opened went unseen, and the check ran on)."""

from __future__ import annotations

import asyncio

import pytest

from remote.hosts.waits import within


async def test_a_cancel_that_lands_as_the_wait_completes_is_raised_and_the_result_discarded(
) -> None:
    opened: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    discarded: list[str] = []
    waiting = asyncio.ensure_future(within(opened, 10.0, discard=discarded.append))
    await asyncio.sleep(0)  # the wait is under way
    opened.set_result("connection")  # the connection opens ...
    waiting.cancel()  # ... in the very moment of the Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert discarded == ["connection"]  # closed by the caller's discard, not left open


async def test_a_wait_past_its_limit_raises_and_cancels_what_it_waited_for() -> None:
    slow = asyncio.ensure_future(asyncio.sleep(60))
    with pytest.raises(asyncio.TimeoutError):
        await within(slow, 0.01)
    assert slow.cancelled()


async def test_a_wait_in_time_returns_the_result() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await within(answer(), 10.0) == 42


async def test_a_cancel_mid_wait_cancels_what_it_waited_for() -> None:
    slow = asyncio.ensure_future(asyncio.sleep(60))
    waiting = asyncio.ensure_future(within(slow, 60.0))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert slow.cancelled()
