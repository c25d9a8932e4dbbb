"""A script's rank that does not reach its first optimizer step in time, named with its stack.

An as-is script writes no step events, so corral's hang watch (``remote.run.hang``) cannot
see it; and a start that never reaches a first step (one rank still loading, asleep, or in a
different collective from the others) holds every rank until torch's own timeout, half an hour
later. So ``script_main`` watches each rank: any optimizer's first ``step`` (torch's global
step hook: HF, TRL and plain loops alike) is the rank's first step. Past ``[run] hang_limit``
seconds without one, the rank

1. writes where its main thread is to the run's store (the process group's, when it exists)
   and waits a few seconds for the other stuck ranks' positions;
2. when one of them waits in a collective (inside ``torch.distributed``), prints its own
   Python stack (the logs panel) and one line naming every stuck rank: those not waiting are
   the likely cause, the others wait for them;
3. exits (the rank that holds the others up first, so the run's failure line names it).

While every stuck rank is busy on its own (loading a model, tokenising) and none waits in a
collective, nothing is named and the watch goes on. ``faulthandler`` is the backstop for a main
thread that holds the GIL (the watch thread cannot run): it dumps every thread's stack to the
rank's log a little after the limit, and leaves the rank running.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
import traceback
from types import FrameType
from typing import Any

import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_post_hook

STUCK_STATUS = 3
"""The exit status of a rank ended as stuck."""
GATHER_S = 5.0
"""Seconds a stuck rank waits for the others' positions (they time out at nearly the same
moment: every rank's watch starts when its process does)."""
BACKSTOP_S = 30.0
"""Seconds after the limit at which faulthandler dumps the stacks of a rank without a step."""
WAITING_PACKAGES = (os.sep.join(("torch", "distributed")), os.sep.join(("torch", "nn", "parallel")))
"""Code of torch's collectives and DDP: a main thread inside it waits for other ranks."""
KEY = "corral/stuck/"


class StartWatch:
    """Watches one rank from its start to its first optimizer step."""

    def __init__(self, limit_s: float, rank: int, world: int) -> None:
        self.limit_s, self.rank, self.world = limit_s, rank, world
        self.stepped = threading.Event()
        self._main = threading.main_thread().ident
        register_optimizer_step_post_hook(self._first_step)
        faulthandler.dump_traceback_later(limit_s + GATHER_S + BACKSTOP_S)
        threading.Thread(target=self._watch, name="corral-start-watch", daemon=True).start()

    def _first_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        # (torch iterates over its hooks while calling this one: it stays, and does nothing)
        if not self.stepped.is_set():
            self.stepped.set()
            faulthandler.cancel_dump_traceback_later()

    def _watch(self) -> None:
        rounds = 0
        while not self.stepped.wait(self.limit_s):
            rounds += 1
            frame = sys._current_frames().get(self._main or 0)
            waiting, where = position(frame)
            positions = self._gather(f"{int(waiting)}{where}", rounds)
            if self.stepped.is_set():
                return
            if any(p[:1] == "1" for p in positions.values()):
                self._end(frame, waiting, positions)
            # Every rank is still busy on its own (loading, tokenising): nobody waits yet.

    def _end(self, frame: FrameType | None, waiting: bool, positions: dict[int, str]) -> None:
        """Print this rank's stack and the line naming the stuck ranks, then exit."""
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        print(f"corral: rank {self.rank} made no step in {self.limit_s:g} s after its start; "
              f"its stack:\n{stack}", file=sys.stderr, end="", flush=True)
        print(f"StuckRankError: {summary(positions, self.limit_s)}", file=sys.stderr,
              flush=True)
        if waiting:  # the rank that holds the others up ends first: the failure names it
            time.sleep(GATHER_S)
        sys.stdout.flush()
        os._exit(STUCK_STATUS)

    def _gather(self, mine: str, rounds: int) -> dict[int, str]:
        """Every stuck rank's position (``1`` or ``0`` for waiting or not, then where) in
        watch round ``rounds``."""
        positions = {self.rank: mine}
        if not (dist.is_available() and dist.is_initialized()):
            return positions
        try:
            store = dist.distributed_c10d._get_default_store()
            key = f"{KEY}{rounds}/"
            store.set(f"{key}{self.rank}", mine)
            time.sleep(GATHER_S)
            for rank in range(self.world):
                if rank != self.rank and store.check([f"{key}{rank}"]):
                    positions[rank] = store.get(f"{key}{rank}").decode()
        except (RuntimeError, ValueError):  # the store went away: this rank's own word
            pass
        return positions


def position(frame: FrameType | None) -> tuple[bool, str]:
    """(waiting for other ranks in a collective, where): the main thread's innermost frame
    in the script (or torch's collective it waits in)."""
    if frame is None:
        return False, "somewhere unknown"
    frames = list(traceback.walk_stack(frame))
    inner = frames[0][0].f_code
    for found, _ in frames:
        code = found.f_code
        if any(package in code.co_filename for package in WAITING_PACKAGES):
            return True, f"{code.co_name} ({os.path.basename(code.co_filename)})"
    for found, line in frames:
        if "site-packages" not in found.f_code.co_filename:
            inner, where_line = found.f_code, line
            return False, f"{os.path.basename(inner.co_filename)}:{where_line} in {inner.co_name}"
    return False, f"{os.path.basename(inner.co_filename)} in {inner.co_name}"


def summary(positions: dict[int, str], limit_s: float) -> str:
    """``no first step within 60 s: rank 2 is in train.py:7 in main; ranks 0, 1 wait for it
    in broadcast (distributed_c10d.py)``."""
    busy = {r: p[1:] for r, p in sorted(positions.items()) if p[:1] == "0"}
    waiting = {r: p[1:] for r, p in sorted(positions.items()) if p[:1] == "1"}
    parts = [f"rank {r} is in {where}" for r, where in busy.items()]
    if waiting:
        places = sorted(set(waiting.values()))
        whom = "for it" if len(busy) == 1 else "for the others" if busy else "for each other"
        many = len(waiting) > 1
        ranks = ", ".join(map(str, waiting))
        parts.append(f"rank{'s' if many else ''} {ranks} wait{'' if many else 's'} {whom} in "
                     f"{' / '.join(places)}")
    return f"no first step within {limit_s:g} s of the start: " + "; ".join(parts)
