"""Every balancer decision checked against what it measured.

The balancer moves the split on a model's prediction (trainer/balance/fit.py, cost.py). On a
machine that other work slows down, the model can be wrong where it matters most: it benched
the slow rank of a 1:3 pair at load 9–12 and the run stayed there at 0.485 × the best static
split (issue 84). So the steps after each decision are the judge, not the model:

- **Undo.** A decision is on trial until the steps after it have run (``AFTER_SETTLE`` left
  out: the change itself costs a group or a replica's broadcast). When their median step time
  is slower than the median of the steps before it by more than the margin, the decision is
  undone: the split goes back — unless the rank slowest after a move of samples is one the
  move took samples from (``move_explains``): that rank got slower by itself (seen at load
  10–13 in issue 84's pair: 46,18 → 48,16 undone while the slow rank's time per sample grew
  1.5×), and the balancer's model, which sees its new speed, answers that instead.
- **Back-off.** What was undone is not proposed again for a while: a change of active set (a
  rank benched or brought back) by its active set, a move of shares by its direction. The
  wait doubles each time the same thing is undone (1, 2, 4, … windows, at most
  ``MAX_BACKOFF`` windows), so a benched host is re-tried on a schedule whose cost falls.
- **No settling below a measured split.** The splits measured over the last
  ``MEMORY_WINDOWS`` windows are remembered with their median step time; when the current
  split has been slower than the best of them by more than the margin for two windows in a
  row, the split returns to it. So the run never stays below a split it measured recently
  — the split it started from included — for more than two windows.

The margin is the balancer's dead-band (its threshold plus the noise of its estimates) or the
measured spread of the step times (their relative median absolute deviation, twice), whichever
is larger: a verdict is never made on a difference the machine's noise makes by itself.

Pure Python over plain numbers, no torch: rank 0's ``Balancer`` owns one and feeds it every
step's wall seconds (``observe``); tests drive it with synthetic times.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

AFTER_SETTLE = 2
"""Steps after a change left out of its measurement (a new group, a rejoining replica)."""
MIN_STEPS = 3
"""Fewest measured steps a window needs before a verdict is made on it."""
MAX_BACKOFF = 16
"""Longest wait, in balancer windows, before an undone change may be proposed again."""
MEMORY_WINDOWS = 4
"""How many windows back a measured split is remembered (speeds drift: older ones go)."""


@dataclass(frozen=True)
class Trial:
    """A decision whose steps have not been judged yet."""

    step: int
    """The step the decision was made at (the new split runs from the next one)."""
    previous: tuple[int, ...]
    split: tuple[int, ...]
    predicted_gain: float
    before_s: float
    """The median wall seconds of a step under ``previous`` before the decision."""


@dataclass(frozen=True)
class Verdict:
    """What the measurements say the balancer must do instead of consulting its model."""

    split: tuple[int, ...]
    """The split to go back to."""
    reason: str
    measured_gain: float
    """Relative step time saved by going back (0.2: steps 20 % shorter), as measured."""


def active_set(split: Sequence[int]) -> tuple[int, ...]:
    """The ranks with a share."""
    return tuple(r for r, b in enumerate(split) if b > 0)


def spread(times: Sequence[float]) -> float:
    """Relative median absolute deviation of step times (0 for fewer than three)."""
    if len(times) < 3:
        return 0.0
    middle = statistics.median(times)
    return statistics.median(abs(t - middle) for t in times) / middle if middle > 0 else 0.0


class DecisionJudge:
    """Rank 0's record of measured step times per split, and the decision on trial."""

    def __init__(self, window: int) -> None:
        """``window``: steps between two decisions (``rebalance_every``)."""
        self.window = max(int(window), 1)
        self._steps: deque[tuple[tuple[int, ...], float]] = deque(
            maxlen=self.window * (MEMORY_WINDOWS + 1))
        self._since_change = 0
        self._trial: Trial | None = None
        self._refused: dict[str, tuple[int, int]] = {}
        """A refused change's key -> (the decision count until which it is refused, how many
        times it has been undone)."""
        self._slower_windows = 0

    # -- measurements ----------------------------------------------------------------------

    def observe(self, split: Sequence[int], step_s: float) -> None:
        """One step's wall seconds under ``split`` (rank 0's, which waits for every rank)."""
        self._since_change += 1
        if self._since_change > AFTER_SETTLE and step_s > 0:
            self._steps.append((tuple(split), float(step_s)))

    def changed(self) -> None:
        """The split changed: the next ``AFTER_SETTLE`` steps are not measured."""
        self._since_change = 0

    def forget(self) -> None:
        """A rank changed speed: what was measured before says nothing of the splits now
        (the refusals stay: they expire by themselves)."""
        self._steps.clear()
        self._trial = None
        self._slower_windows = 0

    def median_of(self, split: Sequence[int], last: int | None = None) -> tuple[float, float]:
        """The median wall seconds of the measured steps under ``split`` among the last
        ``last`` steps (all kept if None), and their relative spread; (0, 0) if too few."""
        steps = list(self._steps)[-last:] if last else list(self._steps)
        times = [t for s, t in steps if s == tuple(split)]
        if len(times) < MIN_STEPS:
            return 0.0, 0.0
        return statistics.median(times), spread(times)

    # -- decisions -------------------------------------------------------------------------

    def start_trial(self, step: int, previous: tuple[int, ...], split: tuple[int, ...],
                    predicted_gain: float) -> None:
        """A decision was made at ``step``: judge it once its steps have run."""
        before, _ = self.median_of(previous, last=self.window)
        self._trial = (Trial(step, previous, split, predicted_gain, before) if before > 0
                       else None)
        self._slower_windows = 0
        self.changed()

    def refuses(self, previous: Sequence[int], split: Sequence[int], now: int) -> bool:
        """Whether the change ``previous -> split`` is still being refused at decision
        ``now`` (an undone change of the same active set, or a move in the same direction)."""
        return any(until > now for key in _keys(previous, split)
                   if (until := self._refused.get(key, (0, 0))[0]))

    def judge(self, current: tuple[int, ...], margin: float, now: int,
              compute_after: Sequence[float | None] = ()) -> Verdict | None:
        """At decision ``now``: undo the decision on trial if its steps measured slower (and
        the move can have made them so: ``move_explains`` with ``compute_after``, each rank's
        measured compute seconds at its share of ``current``), or return to a recently
        measured faster split; None when the measurements agree."""
        trial, self._trial = self._trial, None
        if trial is not None and trial.split == current:
            after, noise = self.median_of(current, last=self.window)
            if after <= 0:
                self._trial = trial  # not measured yet: judge it next time
            else:
                margin = max(margin, 2 * noise)
                if (after > trial.before_s * (1 + margin)
                        and move_explains(trial.previous, trial.split, compute_after)):
                    return self._undo(trial, after, now)
        return self._best_recent(current, margin)

    def _undo(self, trial: Trial, after: float, now: int) -> Verdict:
        waits = []
        for key in _keys(trial.previous, trial.split):
            times = self._refused.get(key, (0, 0))[1] + 1
            wait = min(2 ** (times - 1), MAX_BACKOFF)
            self._refused[key] = (now + wait, times)
            waits.append(wait)
        self.changed()
        reason = (f"undoes step {trial.step}'s move: measured {after * 1000:.1f} ms a step after "
                  f"it against {trial.before_s * 1000:.1f} ms before (predicted "
                  f"{trial.predicted_gain:+.0%}); not tried again for {max(waits)} "
                  f"window{'s' if max(waits) > 1 else ''}")
        return Verdict(split=trial.previous, reason=reason,
                       measured_gain=1 - trial.before_s / after)

    def _best_recent(self, current: tuple[int, ...], margin: float) -> Verdict | None:
        """The fastest split measured over the last ``MEMORY_WINDOWS`` windows, when the
        current one has been slower than it by more than the margin for two windows."""
        now_s, noise = self.median_of(current, last=self.window)
        if now_s <= 0:
            return None
        margin = max(margin, 2 * noise)
        splits = {s for s, _ in self._steps} - {current}
        measured = [(m, s) for s in splits if (m := self.median_of(s)[0]) > 0]
        if not measured:
            self._slower_windows = 0
            return None
        best_s, best = min(measured)
        if now_s <= best_s * (1 + margin):
            self._slower_windows = 0
            return None
        self._slower_windows += 1
        if self._slower_windows < 2:
            return None
        self._slower_windows = 0
        self.changed()
        reason = (f"returns to {','.join(map(str, best))}: measured {best_s * 1000:.1f} ms a "
                  f"step there against {now_s * 1000:.1f} ms now, two windows in a row")
        return Verdict(split=best, reason=reason, measured_gain=1 - best_s / now_s)

    # -- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain Python types, for the balancer's checkpoint state."""
        trial = self._trial
        return {"steps": [[list(s), t] for s, t in self._steps],
                "since_change": self._since_change,
                "trial": None if trial is None else [trial.step, list(trial.previous),
                                                     list(trial.split), trial.predicted_gain,
                                                     trial.before_s],
                "refused": {k: list(v) for k, v in self._refused.items()},
                "slower_windows": self._slower_windows}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore ``state_dict()`` (None: a checkpoint from before verdicts; start empty)."""
        if not state:
            return
        self._steps.clear()
        self._steps.extend((tuple(int(b) for b in s), float(t)) for s, t in state["steps"])
        self._since_change = int(state["since_change"])
        raw = state["trial"]
        self._trial = None if raw is None else Trial(
            int(raw[0]), tuple(int(b) for b in raw[1]), tuple(int(b) for b in raw[2]),
            float(raw[3]), float(raw[4]))
        self._refused = {k: (int(v[0]), int(v[1])) for k, v in state["refused"].items()}
        self._slower_windows = int(state["slower_windows"])


def move_explains(previous: Sequence[int], split: Sequence[int],
                  compute_after: Sequence[float | None]) -> bool:
    """Whether moving samples ``previous -> split`` can have made the steps slower: the rank
    slowest after it (``compute_after``: each rank's compute seconds at its new share) is one
    that gained samples. When the slowest is a rank that lost samples or kept its share, that
    rank itself got slower (a busy machine) and going back would only add its lost samples to
    it. A change of active set changes the exchange too: always judged by its steps (True),
    as is a move whose ranks' times are not all known."""
    if active_set(previous) != active_set(split) or len(compute_after) != len(split):
        return True
    if any(t is None for t in compute_after):
        return True
    slowest = max(range(len(split)), key=lambda r: compute_after[r] or 0.0)
    return split[slowest] > previous[slowest]


def _keys(previous: Sequence[int], split: Sequence[int]) -> list[str]:
    """What identifies a change for the back-off: its new active set when it changes the
    active set, else the direction of its move (which ranks gain, which lose)."""
    before, after = active_set(previous), active_set(split)
    if before != after:
        return ["active:" + ",".join(map(str, after))]
    direction = "".join("+" if n > o else "-" if n < o else "=" for o, n in
                        zip(previous, split, strict=True))
    return ["move:" + direction]
