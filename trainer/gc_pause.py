"""A process's start with Python's cyclic garbage collector paused for its imports.

Importing torch (and ``torch._dynamo``, which every torch optimizer imports at its first step)
makes hundreds of thousands of objects that live as long as the process. The collector runs
after every 700 new container objects, walks the middle generation as well every tenth time and
all of them more rarely still, so while the imports run it traverses the same module objects
again and again and finds almost no garbage. corral's launcher and ranks
make their imports with it paused (``collector_paused``), then freeze what the imports made:
``gc.freeze`` moves it out of the collector's generations, so later collections (in the
training loop too) do not walk it either. docs/benchmarks/ci-time.md "A process's start with the
collector
paused" has the figures (``bench/start_imports.py``). On a user's run it pays too: the demo
cluster.toml's run (three local hosts, 300 steps), five interleaved pairs on a loaded 2-core
machine, took its hosts a median 61.1 CPU-seconds with the pause against 65.7 without (lower in
four pairs of five), so it stays in the product.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with the cyclic collector off; then freeze every object alive (it is not
    collected again, and later collections skip it) and turn the collector back on if it was
    on. For a process's imports: what they make lives as long as the process anyway."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_on:
            gc.enable()
