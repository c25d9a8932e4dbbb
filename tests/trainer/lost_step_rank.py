"""A trainer rank (``python lost_step_rank.py FLAGS``, as ``python -m trainer FLAGS``) with one
of two faults set by its environment, for tests of a loss right at a step's end
(tests/trainer/scenarios/test_membership_state_source.py):

- ``FULL_AT`` (a step): the step event of that step meets a full disk (ENOSPC at the write, as
  on a full tmpfs), so the rank ends through corral's own path, exit status 28, right after it
  completed the step;
- ``CUT_AT`` (a step): this rank's tally gather of that step completes for its peers, but here
  it fails as a gather fails when the run's generation is aborted under it (the peers' loss
  of a member cuts a collective still reading its data), once the events file
  ``CUT_AFTER_END_OF`` holds an ``end`` event (the member whose loss it is has ended). This rank
  has then not completed the step its peers completed: it is a step behind them.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

FULL_AT = "CORRAL_TEST_FULL_AT"
CUT_AT = "CORRAL_TEST_CUT_AT"
CUT_AFTER_END_OF = "CORRAL_TEST_CUT_AFTER_END_OF"
WAIT_S = 120.0
"""The longest the cut waits for the lost member's end."""


def _full_disk_at(step: int) -> None:
    """The step event of ``step`` is refused as by a full disk."""
    import trainer.event_log as event_log

    write = event_log._write

    def full(fd: int, data: Any) -> int:
        for line in bytes(data).decode(errors="replace").splitlines():
            if '"event":"step"' in line and json.loads(line).get("step") == step:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(fd, data)

    event_log._write = full


def _ended(events: Path) -> bool:
    try:
        return '"event":"end"' in events.read_text(errors="replace")
    except OSError:
        return False


def _cut_at(step: int, events: Path) -> None:
    """This rank's tally gather of ``step`` fails once the member writing ``events`` ended."""
    import torch

    import trainer.exact_loop as exact_loop
    import trainer.step.tally as tally
    from trainer.step.step_records import StepDone

    now = {"step": 0}
    train_step = exact_loop.Trainer.train_step

    def counted(self: exact_loop.Trainer, at: int) -> StepDone:
        now["step"] = at
        return train_step(self, at)

    global_units = tally.PendingTallies.global_units

    def cut(self: tally.PendingTallies) -> torch.Tensor:
        units = global_units(self)  # the gather completes: the peers complete the step
        if now["step"] == step:
            deadline = time.monotonic() + WAIT_S
            while not _ended(events) and time.monotonic() < deadline:
                time.sleep(0.01)  # polling the lost member's end, with a deadline
            raise RuntimeError("Connection closed by peer (the generation was aborted under "
                               "this rank's gather)")
        return units

    exact_loop.Trainer.train_step = counted  # type: ignore[method-assign,assignment]
    tally.PendingTallies.global_units = cut  # type: ignore[method-assign]


def main() -> None:
    if os.environ.get(FULL_AT):
        _full_disk_at(int(os.environ[FULL_AT]))
    if os.environ.get(CUT_AT):
        _cut_at(int(os.environ[CUT_AT]), Path(os.environ[CUT_AFTER_END_OF]))
    import trainer.__main__ as entry

    entry._exit(entry.main(sys.argv[1:]))


if __name__ == "__main__":
    main()
