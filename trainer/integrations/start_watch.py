"""A script's rank that makes no optimizer step in time, named with its stack.

An as-is script writes no step events before its first step, and a stretch without a step
(one rank still loading, asleep, in a different collective from the others, or out of batches
while the others take one more) holds every rank until torch's own timeout, half an hour later.
So ``script_main`` watches each rank: any optimizer's ``step`` (torch's global step hook: HF,
TRL and plain loops alike) is the rank's progress. Past ``[run] hang_limit`` seconds without
one, from its start or from its last step, the rank

1. writes where its main thread is to the run's store (the process group's, when it exists)
   and waits a few seconds for the other stuck ranks' positions;
2. when one of them waits in a collective (inside ``torch.distributed``, or in DDP's gradient
   all-reduce inside ``backward``), prints its own Python stack (the logs panel) and one line
   naming every stuck rank: those not waiting (or waiting in another collective than the
   backward's) are the likely cause, the others wait for them. Ranks in the backward's
   all-reduce while another waits elsewhere past the last step are an uneven epoch (unequal
   batch counts): the line says so and names DDP's ``join()``;
3. exits: a rank busy on its own with ``STUCK_STATUS``; a waiting rank a few seconds later with
   ``WAITING_STATUS``, after a line naming the ranks it waited for (``HELD_UP_BY``), so the
   run's failure names the rank that held the others up whichever exit the follower sees first.

While every stuck rank is busy on its own (loading a model, tokenising, evaluating) and none
waits in a collective, nothing is named and the watch goes on. A rank whose main thread holds
the GIL (a long C call that never releases it) cannot run its watch thread: it writes no
position, and the waiting ranks name it as silent, holding them up. Its stack comes from outside
the interpreter: ``faulthandler``'s watchdog is a C thread that needs no GIL, armed from the
start and again (at most once a second) at each step, and it dumps every thread's stack to the
rank's log just after the others' gather (``BACKSTOP_S``), before the waiting ranks exit; the
rank itself runs on until the run's stop ends it. The lines name ``[run] hang_limit``, the
setting that decides the wait.
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

from trainer.launch_contract import HELD_UP_BY, STUCK_STATUS, WAITING_STATUS

GATHER_S = 5.0
"""Seconds a stuck rank waits for the others' positions (they time out at nearly the same
moment: every rank's watch starts when its process does)."""
BACKSTOP_S = 2.0
"""Seconds after the limit and the gather at which faulthandler dumps the stacks of a rank
without a step (once): a rank that holds the GIL is named by the others, its stack is this
dump; it comes before they exit (``GATHER_S`` later)."""
WAITING_PACKAGES = (os.sep.join(("torch", "distributed")), os.sep.join(("torch", "nn", "parallel")))
"""Code of torch's collectives and DDP: a main thread inside it waits for other ranks."""
BACKWARD_PACKAGE = os.sep.join(("torch", "autograd"))
"""Autograd's code: a main thread stuck in it waits in DDP's gradient all-reduce."""
BACKWARD = "backward (DDP's gradient all-reduce)"
"""Where a rank waiting in ``BACKWARD_PACKAGE`` is said to be."""
REARM_EVERY_S = 1.0
"""The faulthandler watchdog is armed again at a step at most this often (arming starts a
thread)."""
KEY = "corral/stuck/"
SILENT = "-"
"""The position of a rank that wrote none during the gather: its main thread holds the GIL (its
watch thread cannot run) or its process is frozen."""


class StartWatch:
    """Watches one rank from its start, and from each optimizer step to the next."""

    def __init__(self, limit_s: float, rank: int, world: int) -> None:
        self.limit_s, self.rank, self.world = limit_s, rank, world
        self.steps = 0
        self.stepped = threading.Event()
        """Set at each step; the watch clears it as it waits for the next."""
        self._armed = time.monotonic()
        self._main = threading.main_thread().ident
        register_optimizer_step_post_hook(self._step)
        faulthandler.dump_traceback_later(limit_s + GATHER_S + BACKSTOP_S)
        threading.Thread(target=self._watch, name="corral-start-watch", daemon=True).start()

    def _step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.steps += 1
        self.stepped.set()
        now = time.monotonic()
        if now - self._armed >= REARM_EVERY_S:  # (arming cancels the one before)
            self._armed = now
            faulthandler.dump_traceback_later(self.limit_s + GATHER_S + BACKSTOP_S)

    def _watch(self) -> None:
        rounds = 0
        while True:
            if self.stepped.wait(self.limit_s):
                self.stepped.clear()
                continue
            rounds += 1
            frame = sys._current_frames().get(self._main or 0)
            waiting, where = position(frame)
            positions = self._gather(f"{int(waiting)}{where}", rounds)
            if self.stepped.is_set():
                continue
            if any(p[:1] == "1" for p in positions.values()):
                self._end(frame, waiting, positions)
            # Every rank is still busy on its own (loading, evaluating, waiting for processes
            # it started): nobody waits yet, and this thread ran, so the GIL is not held:
            # the stack dump waits for the next round.
            faulthandler.dump_traceback_later(self.limit_s + GATHER_S + BACKSTOP_S)

    def _end(self, frame: FrameType | None, waiting: bool, positions: dict[int, str]) -> None:
        """Print this rank's stack and the line naming the stuck ranks, then exit."""
        faulthandler.cancel_dump_traceback_later()  # this stack, printed now, is the one
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        since = "its start" if not self.steps else f"its step {self.steps}"
        print(f"corral: rank {self.rank} made no step in {self.limit_s:g} s after {since}; "
              f"its stack:\n{stack}", file=sys.stderr, end="", flush=True)
        print(f"StuckRankError: {summary(positions, self.limit_s, self.steps)}",
              file=sys.stderr, flush=True)
        held = holders(positions)
        waiting = waiting and self.rank not in held
        if waiting:  # the rank that holds the others up ends first; the follower blames it
            if held:
                print(f"{HELD_UP_BY}{', '.join(map(str, held))}", file=sys.stderr, flush=True)
            time.sleep(GATHER_S)
        sys.stdout.flush()
        os._exit(WAITING_STATUS if waiting else STUCK_STATUS)

    def _gather(self, mine: str, rounds: int) -> dict[int, str]:
        """Every stuck rank's position (``1`` or ``0`` for waiting or not, then where) in
        watch round ``rounds``; ``SILENT`` for a rank that wrote none in time (one already past
        its first step writes none either; rare while others wait for their first, as a
        first step needs every rank's gradients)."""
        positions = {self.rank: mine}
        if not (dist.is_available() and dist.is_initialized()):
            return positions
        try:
            store = dist.distributed_c10d._get_default_store()
            key = f"{KEY}{rounds}/"
            store.set(f"{key}{self.rank}", mine)
            time.sleep(GATHER_S)
            for rank in range(self.world):
                if rank != self.rank:
                    found = store.check([f"{key}{rank}"])
                    positions[rank] = store.get(f"{key}{rank}").decode() if found else SILENT
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
        if BACKWARD_PACKAGE in code.co_filename:
            return True, BACKWARD
    for found, line in frames:
        if "site-packages" not in found.f_code.co_filename:
            inner, where_line = found.f_code, line
            return False, f"{os.path.basename(inner.co_filename)}:{where_line} in {inner.co_name}"
    return False, f"{os.path.basename(inner.co_filename)} in {inner.co_name}"


def uneven(positions: dict[int, str]) -> bool:
    """Some ranks wait in the backward's all-reduce, some wait in another collective: ranks
    with unequal batch counts (the others take a step these do not)."""
    places = {p[1:] for p in positions.values() if p[:1] == "1"}
    return BACKWARD in places and len(places) > 1


def holders(positions: dict[int, str]) -> list[int]:
    """The ranks the waiting ones wait for: busy on their own, or silent; in an uneven epoch,
    the ranks waiting elsewhere than the backward's all-reduce."""
    if uneven(positions):
        return sorted(r for r, p in positions.items() if p[1:] != BACKWARD)
    return sorted(r for r, p in positions.items() if p[:1] != "1")


def summary(positions: dict[int, str], limit_s: float, steps: int = 0) -> str:
    """``no first step within 60 s of the start ([run] hang_limit): rank 2 is in train.py:7
    in main; ranks 0, 1 wait for it in broadcast (distributed_c10d.py)``; after ``steps``,
    ``no step within 60 s after step 5 ([run] hang_limit): ...``."""
    if uneven(positions):
        return uneven_summary(positions, limit_s, steps)
    busy = {r: p[1:] for r, p in sorted(positions.items()) if p[:1] == "0"}
    silent = [r for r, p in sorted(positions.items()) if p == SILENT]
    waiting = {r: p[1:] for r, p in sorted(positions.items()) if p[:1] == "1"}
    parts = [f"rank {r} is in {where}" for r, where in busy.items()]
    if silent:
        parts.append(f"rank{'s' if len(silent) > 1 else ''} {', '.join(map(str, silent))} "
                     f"gave no position in {GATHER_S:g} s (its main thread holds the GIL or "
                     "it is frozen: its stack follows in its log)")
    if waiting:
        places = sorted(set(waiting.values()))
        held = len(busy) + len(silent)
        whom = "for it" if held == 1 else "for the others" if held else "for each other"
        many = len(waiting) > 1
        ranks = ", ".join(map(str, waiting))
        parts.append(f"rank{'s' if many else ''} {ranks} wait{'' if many else 's'} {whom} in "
                     f"{' / '.join(places)}")
    return f"{_within(limit_s, steps)}: " + "; ".join(parts)


def uneven_summary(positions: dict[int, str], limit_s: float, steps: int) -> str:
    """The line for an uneven epoch: who waits in the backward, who is elsewhere, and the
    fix (DDP's ``join()``)."""
    backward = [r for r, p in sorted(positions.items()) if p[1:] == BACKWARD]
    elsewhere = {r: p[1:] for r, p in sorted(positions.items()) if p[1:] != BACKWARD}
    many = len(backward) > 1
    ranks = ", ".join(map(str, backward))
    others = ", ".join(map(str, elsewhere))
    where = "; ".join(f"rank {r} is elsewhere, "
                      + ("giving no position" if p == SILENT else
                         f"waiting in {p[1:]}" if p[:1] == "1" else f"in {p[1:]}")
                      for r, p in ((r, positions[r]) for r in elsewhere))
    few = len(elsewhere) > 1
    return (f"{_within(limit_s, steps)}: rank{'s' if many else ''} {ranks} "
            f"wait{'' if many else 's'} in {BACKWARD} for a step that "
            f"rank{'s' if few else ''} {others} do{'' if few else 'es'} not take; {where}. "
            "An uneven epoch: the ranks hold unequal numbers of batches. Wrap the training "
            "loop in DDP's join() (`with model.join():`), or give every rank the same number "
            "of batches (a DistributedSampler with drop_last=True)")


def _within(limit_s: float, steps: int) -> str:
    if not steps:
        return f"no first step within {limit_s:g} s of the start ([run] hang_limit)"
    return f"no step within {limit_s:g} s after step {steps} ([run] hang_limit)"
