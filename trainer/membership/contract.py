"""What the remote layer and the ranks agree on for a live join or leave; each name once.

A planned leave is asked for by a file on the leaving host: ``corral leave HOST`` (or the
console) writes ``RunLayout.leave_request(HOST)`` in that host's run directory, and the host's
ranks read it at the next step boundary. A join is a launch of the new host's ranks with
``JOIN_ENV`` set: they wait to be let in at a step boundary and receive the training state from
a live rank. Every change of membership is reported by rank 0 as one ``MembershipEvent``
(``trainer.events``, with its ``LeaveCause`` and ``MembershipChange``). Pushed with the
trainer, so this module imports nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

JOIN_ENV = "CORRAL_JOIN"
"""Set on a joining host's ranks: the run's membership generation they were launched against
(an integer as text); absent on the ranks launched with the run."""
MEMBERSHIP_PORT_ENV = "CORRAL_MEMBERSHIP_PORT"
"""The port on the master's address where the run's membership store listens (every rank,
joiners included, reaches the store there)."""

MEMBERSHIP_ADDR_ENV = "CORRAL_MEMBERSHIP_ADDR"
"""On a joiner's ranks (``corral join``): the master's address, where the run's store listens.
A joiner runs under a torchrun of its own (not the run's rendezvous), whose ``MASTER_ADDR`` is
its own host; without this variable a rank reaches the store at ``MASTER_ADDR``."""
HOST_LOSS_ENV = "CORRAL_ON_HOST_LOSS"
"""``[run] on_host_loss`` as the ranks are told it. ``stop``: a member lost unplanned fails the
survivors' ranks too, as without live membership (the run then fails, or restarts under
``max_restarts``), while planned leaves and joins stay live; ``continue`` or absent: the
survivors leave the lost host behind in their own processes."""
JOINED_LINE = "corral: joined the run as member {member}"
"""What a joiner's rank prints once admitted: the member id its events file is named by.
The host's tailer (``remote/run/tail_script.py``) takes the rank as the host's from it."""

LOSS_DETECT_S = 5.0
"""The longest the surviving ranks take to notice a host that stopped answering."""


@dataclass(frozen=True)
class ChangeMoment:
    """When a planned leave or a join takes effect in a run, and what it carries, as every
    front end says it (``corral leave``/``join``, the console's keys, the follower's
    ``joining``): at a step boundary in exact mode, at an outer step (a round's end) with
    ``exchange = "local"``, where islands join and leave (trainer/lowcomm/islands.py)."""

    leave_at: str
    """Where a planned leave takes effect (after "leaves at")."""
    join_at: str
    """Where rank 0 lets a joiner in (after "lets it in at")."""
    leaver: str
    """What a planned leave does to the run, a sentence."""
    joiner: str
    """What a joiner receives, a sentence."""


def change_moment(exchange: str) -> ChangeMoment:
    """The ``ChangeMoment`` of a run whose ``[run] exchange`` is ``exchange``."""
    if exchange == "local":
        return ChangeMoment(
            leave_at="the end of the round under way", join_at="a round's end (an outer step)",
            leaver="It finishes the round; its change is in the round's average.",
            joiner="It becomes a new island with the anchor and the outer momentum; "
                   "the others go on.")
    return ChangeMoment(leave_at="its next step boundary", join_at="a step boundary",
                        leaver="Its share goes to the other hosts; nothing is redone.",
                        joiner="It receives the run's state; the others go on.")


def survives_loss() -> bool:
    """Whether this rank's run goes on without a member lost unplanned (``HOST_LOSS_ENV``)."""
    return os.environ.get(HOST_LOSS_ENV, "continue") != "stop"
