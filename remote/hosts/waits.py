"""A bounded wait that never loses a cancel.

Python 3.10's and 3.11's ``asyncio.wait_for`` returns the awaited result when a cancel lands in
the moment it completes, and the cancel is gone. A Ctrl-C cancels ``corral run`` once
(``console.run_cli.FirstInterrupt``): it went unseen when it landed as a host's connection
opened, and the check went on to its next command (a rendezvous port test ran its 10 s to the
end before the stop began, issue 59). ``within`` is ``wait_for`` without that race, as Python
3.12's own is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def within(aw: Awaitable[T], timeout: float | None, *,
                 discard: Callable[[T], object] | None = None) -> T:
    """``await aw`` for at most ``timeout`` seconds: ``asyncio.TimeoutError`` after, ``aw``
    cancelled and waited for, as ``asyncio.wait_for`` does. A cancel of the caller is always
    raised, even when ``aw`` completed in the same moment; its result then goes to
    ``discard`` (a connection to close, say), never silently dropped."""
    task = asyncio.ensure_future(aw)
    try:
        await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        await _cancelled(task, discard)
        raise
    if not task.done():
        await _cancelled(task, discard)
        raise asyncio.TimeoutError
    return task.result()


async def _cancelled(task: asyncio.Future[T], discard: Callable[[T], object] | None) -> None:
    """Cancel ``task`` and wait for its end; a result it reached all the same goes to
    ``discard``."""
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled() and task.exception() is None and discard is not None:
        discard(task.result())
