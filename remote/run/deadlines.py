"""How long the run loop waits, in seconds: the deadlines ``decide`` keeps in the loop's state
and the graces of the stops it asks for. Constants only (no I/O), so the pure decider, the
follower that reports the facts and the stop that carries out the graces read one value."""

from __future__ import annotations

from trainer.membership.contract import LOSS_DETECT_S

FAILURE_SETTLE_S = 10.0
"""After the first failure, wait at most this long for the report that names its cause before
stopping the other hosts (a peer's error often arrives before the killed rank's launcher
reports it); the cause known (``CauseKnown``) usually ends the wait much earlier."""
HOT_PATH_WAIT_S = LOSS_DETECT_S + 15.0
"""After a host's failure, how long the loop waits for the survivors' ``membership`` event
(their loss detection, the step they redo, and its report) before the run falls back to a
restart."""
DONE_GRACE_S = 60.0
"""Seconds after every rank's completed ``end`` event before processes that have not exited are
ended (the run still completed): time for a script to save its model after training."""
STOP_GRACE_ON_FAILURE_S = 5.0
"""Seconds between TERM and KILL when the hosts are stopped after a failure, or a
completed run's lingering processes are ended, or a failed attempt is swept for straggler
ranks."""
LAUNCH_STOP_GRACE_S = 2.0
"""Seconds between TERM and KILL when a launch that failed (or was stopped before it ran) is
cleaned up: its ranks have not trained anything worth saving."""
