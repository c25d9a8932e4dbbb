"""What a join cost, by phase, as the membership event says it (issue 78: join cost shown).

``corral join`` times its own phases on the user's machine (``check``: the pre-flight of the
joiner and its links; ``push``: its code and the run's data) and hands them to the joiner's
ranks in ``JOIN_PHASES_ENV``. The joiner adds ``start`` (its torchrun's start to its
announcement in the run's store, on the joiner's own clock) and announces them; rank 0 adds
``admission`` (from seeing the announcement to the new generation's first completed step, on
its clock) and writes them in the ``joined`` event's ``phases``. Each phase is measured on one
machine's clock: no two clocks are compared. Pushed with the trainer: standard library only.
"""

from __future__ import annotations

import json
import os
import time

from trainer.events.membership import START_PARTS

JOIN_PHASES_ENV = "CORRAL_JOIN_PHASES"
"""On a joiner's ranks: ``corral join``'s phases, a JSON object of seconds by name."""
PHASES = ("check", "push", "start", "admission")
"""The phases of a join, in their order (seconds each)."""
ORDER = ("check", "push", "start", *START_PARTS, "admission")
"""The phases and ``start``'s parts, as the ``joined`` event lists them."""


def process_age(pid: int) -> float | None:
    """Seconds since process ``pid`` started (Linux's ``/proc``; None elsewhere or gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime, after the comm
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def joiner_phases(warm_up_s: float | None = None) -> dict[str, float]:
    """This joiner's phases so far: ``corral join``'s, and ``start`` (its launcher's age: the
    rank's parent is torchrun's agent) when it can be read, with its parts (``START_PARTS``)
    when this rank's own age can be read too and its warm-up took ``warm_up_s``."""
    try:
        given = json.loads(os.environ.get(JOIN_PHASES_ENV, "{}"))
    except ValueError:
        given = {}
    phases = {k: round(float(v), 3) for k, v in given.items()
              if k in PHASES and isinstance(v, int | float)} if isinstance(given, dict) else {}
    if (age := process_age(os.getppid())) is not None:
        phases["start"] = round(age, 3)
        if (own := process_age(os.getpid())) is not None and warm_up_s is not None:
            phases["launcher"] = round(max(0.0, age - own), 3)
            phases["setup"] = round(max(0.0, own - warm_up_s), 3)
            phases["warm_up"] = round(warm_up_s, 3)
    return phases


def admitted_phases(joiner: dict[str, float], admission_s: float) -> dict[str, float]:
    """The ``joined`` event's phases: the joiner's, then ``admission``, in ``ORDER``."""
    found = {**joiner, "admission": round(admission_s, 3)}
    return {name: found[name] for name in ORDER if name in found}
