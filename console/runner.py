"""Run one command's coroutine and end, whatever its leftovers do.

``asyncio.run`` waits without limit for every task left when the command returns to finish
cancelling, and for every thread of the default executor: one task that swallows its
cancellation, or one thread blocked in a read, would keep ``corral run`` alive after it said
"detached" (``tests/remote/scenarios/test_ways_out_sshd.py``). Here the command's own result
decides;
its leftovers get ``TEARDOWN_S`` to end, and a process whose leftovers do not end exits with
the command's status all the same, after naming what it left behind on stderr.

The default executor's threads (asyncssh loads its options, signs and does its key exchange
there; corral's own ``asyncio.to_thread`` calls) are waited for here, not by
``loop.shutdown_default_executor``: on Python 3.11 that coroutine joins its helper thread in a
``finally``, so a timeout around it blocks the loop until every thread's work ends, which a
thread blocked in a read never does.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
import sys
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

TEARDOWN_S = 10.0
"""How long the tasks and threads a finished command left may take to end."""

# The interpreter's own end: its garbage collections over every object corral's imports made
# (asyncssh, rich, the checks, the run loop) took 0.8-2 s of a Ctrl-C's 5 s on the
# loaded 2-core VM (0.2-0.4 s once frozen: docs/benchmarks/ci-time.md). Frozen at exit, after every
# other
# exit handler registered later has run; nothing of corral needs a finalizer of a cycle there.
atexit.register(gc.freeze)


def run_command(command: Coroutine[Any, Any, int]) -> int:
    """The exit status of ``command``, run on a fresh event loop with a bounded teardown."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    executor = ThreadPoolExecutor(thread_name_prefix="corral")
    loop.set_default_executor(executor)
    status: int | None = None
    try:
        status = loop.run_until_complete(command)
        return status
    finally:
        if not _teardown(loop, executor):
            names = sorted({task.get_name() for task in asyncio.all_tasks(loop)
                            if not task.done()})
            print(f"corral: leftovers did not end within {TEARDOWN_S:.0f} s "
                  f"({', '.join(names) or 'a worker thread'}); exiting", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status if status is not None else _status(sys.exc_info()[1]))
        asyncio.set_event_loop(None)
        loop.close()


def _teardown(loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor) -> bool:
    """Cancel what the command left, close async generators and the default ``executor``, each
    within ``TEARDOWN_S``; False when something did not end in time."""
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        _, late = loop.run_until_complete(asyncio.wait(pending, timeout=TEARDOWN_S))
        if late:
            return False
    try:
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), TEARDOWN_S))
    except (asyncio.TimeoutError, RuntimeError):
        return False
    # The executor's threads, waited for by a daemon thread that this one leaves behind (the
    # process then exits at once) when they outlast the limit.
    shutdown = threading.Thread(target=executor.shutdown, daemon=True, name="corral-shutdown")
    shutdown.start()
    shutdown.join(TEARDOWN_S)
    return not shutdown.is_alive()


def _status(raised: BaseException | None) -> int:
    """The exit status of a command that raised ``raised``."""
    if isinstance(raised, SystemExit):
        return raised.code if isinstance(raised.code, int) else 1
    return 130 if isinstance(raised, KeyboardInterrupt) else 1
