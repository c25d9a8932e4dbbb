"""What corral's launcher tells the ranks it starts, besides their flags: the environment
variables it sets and the prefix of each rank's output line.

The launcher (``remote.run.launch``) writes them, the trainer reads them, and the follower
(``remote.run.stream``) reads each output line's rank back from its prefix; each name is spelled
here once. (Every path inside a run directory, the launcher's exit file included, is named in
``trainer.run_layout``.) Pushed with the trainer, so this module imports nothing.
"""

from __future__ import annotations

import re

HOST_ENV = "CORRAL_HOST"
"""The host's name in cluster.toml (messages name it: "disk full on HOST at PATH")."""
RUN_ID_ENV = "CORRAL_RUN_ID"
"""The run's id."""
RANK_BASE_ENV = "CORRAL_RANK_BASE"
"""The global rank of this host's first rank: ranks are numbered in cluster.toml's host order,
not in torch's node order, so a rank's global rank is this base plus its ``LOCAL_RANK``."""
ALLOCATOR_ENV = "CORRAL_ALLOCATOR"
"""The allocator the launcher chose for this rank (see ``trainer.placement.ALLOCATORS``)."""

LAUNCHER_PID_ENV = "CORRAL_LAUNCHER_PID"
"""The pid of the launcher (torch's agent) that starts the ranks: a rank ends when that process
is no longer its parent (``trainer.launcher_death``)."""

STOP_WAIT_LIMIT_S = 600.0
"""The longest a stop waits for the ranks to reach a point where they can stop with a
checkpoint (``exchange = "local"``: the round under way ends first; islands do not talk
mid-round). ``corral stop`` gives a local-mode run up to this (from its last round's time),
and the launcher lets its ranks have as long once it is stopped (torchrun's own 30 s would cut
the round short); corral's KILL after the stop's grace still bounds every stop."""

LOG_LINE_PREFIX_ENV = "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"
"""torchrun's variable for the prefix of each rank's teed output line."""


def log_line_prefix(first_rank: int) -> str:
    """The template for ``LOG_LINE_PREFIX_ENV``: ``[rank<local>+<first rank>]:`` (torch's own
    ``${rank}`` follows its node order, not the ranks the trainer uses)."""
    return f"[rank${{local_rank}}+{first_rank}]:"


LOG_LINE_PREFIX = re.compile(r"^\[rank(\d+)(?:\+(\d+))?\]:")
"""A rank's output line as ``log_line_prefix`` makes it (``[rank<rank>]:`` from launches before
ranks were numbered in host order): the local rank, then the host's first rank."""


def line_rank(match: re.Match[str]) -> int:
    """The global rank of a ``LOG_LINE_PREFIX`` match."""
    return int(match.group(1)) + int(match.group(2) or 0)


STUCK_STATUS = 3
"""The exit status of a rank ended as stuck at its start (``trainer.integrations.start_watch``)
while it was busy on its own: the rank that held the others up."""
WAITING_STATUS = 4
"""The exit status of a rank ended as stuck at its start while it waited in a collective for
other ranks: a consequence, ranked below the rank it waited for (``remote.run.failures``)."""
DISK_FULL_EXIT = 28
"""The exit status of a rank that ended on a full disk (``trainer.disk_full``; ENOSPC's number):
its words may not fit on that disk, but torchrun's summary of its failure reaches the follower
once there is room again, and this status in it names the cause (``remote.run.monitor``)."""
HELD_UP_BY = "corral: held up by ranks "
"""What a waiting stuck rank prints before it exits, then the ranks it waited for (comma
separated): the follower blames them, whichever of the ranks exits first."""
HELD_UP_LINE = re.compile(re.escape(HELD_UP_BY) + r"(\d+(?:, \d+)*)$")
"""A ``HELD_UP_BY`` line as the follower reads it, after any prefix (the ranks in group 1)."""
