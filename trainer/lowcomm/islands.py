"""Islands joining and leaving a low-communication run at an outer step (live membership,
docs/lowcomm.md "Islands joining and leaving"): what is the low-communication loop's own;
the generations driver (trainer/membership/generations.py) holds the rest.

With ``CORRAL_MEMBERSHIP_PORT`` an island is a host, and every change waits for a round's end,
where every rank holds the anchor:
- a planned leave (the host's leave request, carried in the round's tally) takes effect after
  the round it was seen in: the leaver finished that round and its change is in the average;
  its error-feedback residual leaves with it;
- a lost island (its ranks killed, its link cut) is dropped from the round it was lost in: the
  survivors finish their inner steps, their exchange fails, and in the next generation they
  redo the exchange over the islands that completed the round (their residuals as before the
  failed try, the weights their own samples); if some survivor had already applied the round
  (the island was lost after its change was exchanged), that survivor's outer state is sent to
  the others instead and nothing is dropped;
- a joiner is admitted at a round's end: rank 0 sends it the anchor (= every rank's trained
  parameters; its buffers stay its own), the outer optimizer's momentum, the step, the
  islands' speeds and the round length; its inner optimizer and its error-feedback residual
  start at zero, and its island's speed is the mean of the others' until measured.
Without the port the driver is ``FixedGroup``: a round's exchange is done once, its error the
run's.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

from trainer.lowcomm.outer import OuterStep
from trainer.lowcomm.plan import RoundPlan
from trainer.lowcomm.steps import RoundTally
from trainer.membership.generations import GroupDriver
from trainer.membership.plan import NextGeneration


def finish_round(group: GroupDriver, outer: OuterStep, plan: RoundPlan, mine: RoundTally,
                 weights: list[int], exchange: Callable[[list[int]], None],
                 gather: Callable[[RoundTally], list[RoundTally]], hosts: tuple[str, ...],
                 hosts_now: Callable[[], tuple[str, ...]]
                 ) -> tuple[list[RoundTally] | None, tuple[str, ...]]:
    """``exchange(weights)`` (the outer step) and the round's tallies (``gather``), and the
    hosts dropped from the round; with live membership an island lost meanwhile is dropped and
    the survivors go on in the next generation (``hosts``: each island's host as the round
    started; ``hosts_now()``: after the change). Tallies None: this rank's own host was cut
    off and is out."""
    if group.flags is not None:
        mine.leave, mine.joiners = group.flags()
    feedback = outer.feedback
    dropped: tuple[str, ...] = ()
    before = feedback.residual.clone() if feedback is not None and group.live else None
    applied = False
    try:
        exchange(weights)
        applied = True
        return gather(mine), ()
    except RuntimeError as exc:
        error = exc

    def redo(nxt: NextGeneration) -> list[RoundTally]:
        nonlocal applied, dropped
        if nxt.step < plan.last_step:  # nobody applied the round: redo it without them
            if outer.feedback is not None and before is not None:
                outer.feedback.residual = before.clone()
            kept = hosts_now()
            dropped = tuple(h for h in hosts if h not in kept)
            exchange([weights[hosts.index(h)] for h in kept])
            applied = True
        return gather(mine)

    tallies = group.survive(error, lambda: plan.last_step if applied else plan.first_step - 1,
                            redo)
    return tallies, dropped


def carried_speeds(hosts: tuple[str, ...], speeds: list[float]) -> dict[str, float]:
    """Each island's speed by its host, as before a change (kept while a generation forms)."""
    return dict(zip(hosts, speeds, strict=True))


def speeds_after(before: dict[str, float], hosts: tuple[str, ...]) -> list[float]:
    """Each island's speed in the new generation: a kept host's own, a joiner's the mean of
    the others' until measured."""
    known = list(before.values())
    return [before.get(h, statistics.fmean(known)) for h in hosts]


def outer_state(outer: OuterStep, step: int, speeds: list[float],
                round_steps: int | None) -> dict[str, Any]:
    """What a rank needs to start the next round as every other one: the anchor (the trained
    parameters at a round's end; not the buffers, an island's own, as a replay's island that
    was outside the rounds keeps its own), the outer momentum, the step, the speeds and the
    round length."""
    return {"parameters": [p.detach().cpu() for p in outer.parameters],
            "outer": outer.state_dict(), "step": step, "speeds": list(speeds),
            "round_steps": round_steps}


def load_outer_state(outer: OuterStep, state: dict[str, Any], device: torch.device
                     ) -> tuple[int, list[float], int | None]:
    """``outer_state``'s, taken: the parameters, then the anchor from them; returns the step,
    the speeds and the round length."""
    with torch.no_grad():
        for mine, sent in zip(outer.parameters, state["parameters"], strict=True):
            mine.copy_(sent)
    outer.load_state_dict(state["outer"], device)
    return state["step"], list(state["speeds"]), state["round_steps"]
