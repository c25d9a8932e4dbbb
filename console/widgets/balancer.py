"""Balancer panel: the current split as a bar per rank, the policy, and the decision log (the
balancer's moves and each leave, join or lost host)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from console.formatting import OPT_IN_HINT, bar, cells, fmt_percent
from console.model.run import RunModel
from console.widgets.lines_view import LinesView
from console.widgets.packing import label_cells, line_count, packed_line, per_line
from figures import Move
from trainer.events import MembershipEvent

SHARE_STYLE = "cyan"
BAR_LEAST = 4
"""A share's bar needs this many cells; in less, the share is shown without it."""
DECISIONS_LEAST = (1, 3)
"""Lines the decision list keeps on a short panel, and from ``TALL_FROM`` lines on."""
TALL_FROM = 10


def policy_line(model: RunModel) -> Text:
    """``policy dynamic · next start: static`` (a plain script's run: no balancing)."""
    if model.plain_script:
        return Text(f"no balancing: plain script · {OPT_IN_HINT} enables it", style="grey50")
    text = Text("policy ")
    text.append(model.policy or model.next_policy, style="bold")
    if model.policy is not None and model.policy != model.next_policy:
        text.append(f" · next start: {model.next_policy}", style="yellow")
    elif model.policy is None:
        text.append(" (next start)", style="grey50")
    if model.capacity_source:
        text.append(f" · capacities: {model.capacity_source}", style="grey50")
    start, last = model.figures.first_start, model.figures.last_round
    if start is not None and start.exchange == "local":  # docs/lowcomm.md
        text.append(" · exchange local: APPROXIMATE", style="bold yellow")
        if last is not None:
            text.append(f" · exchanged {last.exchange_text()} · round "
                        f"{'+'.join(map(str, last.inner_steps))} steps, {last.round_s:.2f} s",
                        style="yellow")
            if last.island_hosts:  # live membership: the islands of the round
                text.append(f" · islands {last.islands_text()}", style="yellow")
    return text


def split_row(model: RunModel, index: int, width: int) -> Text:
    """``beta:1 ██████▌    24``: rank ``index``'s share of the global batch, labelled with
    the host of that rank (``rank 2`` while that rank has not reported yet); in a narrow cell
    (compact rows) the bar goes and the label and share stay."""
    share = model.split[index]
    total = sum(model.split) or 1
    label = label_cells([split_label(model, i) for i in range(len(model.split))])
    share_cells = len(str(total))
    bar_width = width - label - share_cells - 2
    if bar_width < BAR_LEAST:
        return cells((split_label(model, index), label, "left"),
                     (str(share), max(share_cells, width - label - 1), "right"))
    return cells((split_label(model, index), label, "left"),
                 (Text(bar(share / total, bar_width), style=SHARE_STYLE), bar_width, "left"),
                 (str(share), share_cells, "right"))


def split_label(model: RunModel, index: int) -> str:
    """``beta:1``: the host and event rank of the split's ``index``-th share."""
    rank = model.member(index)  # the event rank, as every panel numbers it (a joiner: new id)
    known = model.ranks.get(rank)  # by rank, not by position among the ranks reported so far
    return f"{known.host}:{rank}" if known is not None else f"rank {rank}"


def split_least(model: RunModel) -> int:
    """The fewest cells a share reads in, compact: its label, a space, the share."""
    labels = [split_label(model, i) for i in range(len(model.split))]
    return label_cells(labels) + 1 + len(str(sum(model.split) or 1))


def split_text(split: Sequence[int]) -> str:
    """``20/20/20``."""
    return "/".join(str(share) for share in split)


def _append_gain(text: Text, gain: float | None) -> None:
    """The measured gain, or ``…`` while the steps that measure it have not run."""
    if gain is None:
        text.append("…", style="grey50")
    else:
        text.append(fmt_percent(gain, signed=True), style="green" if gain >= 0 else "red")


def decision_row(decision: Move, width: int = 100) -> Text:
    """``step 6  20/20/20 → 34/17/9  pred +30%  meas +28%  reason``; narrow:
    ``6: →34/17/9 pred +30% meas +28%``."""
    narrow = width < 60
    if narrow:
        text = Text(f"{decision.step}: ", style="bold")
        text.append(f"→{split_text(decision.split)}")
    else:
        text = Text(f"step {decision.step:<5}", style="bold")
        text.append(f"{split_text(decision.previous)} → {split_text(decision.split)}")
    text.append(" pred " if narrow else "  pred ")
    text.append(fmt_percent(decision.predicted_gain, signed=True), style="yellow")
    text.append(" meas " if narrow else "  meas ")
    _append_gain(text, decision.measured_gain)
    text.append(f"  {decision.reason}", style="grey50")
    return text


def change_row(change: Move | MembershipEvent, width: int = 100) -> Text:
    """A balancer move (``decision_row``), or a change of the run's hosts: ``step 198  gen 1
    c left (asked)  next step in 0.5 s``, a join with its phases instead (``check 1.2 s, push 0.4 s,
    start 3.0 s, admission 0.8 s``); narrow: ``198: gen1 −c asked 0.5s``."""
    if isinstance(change, Move):
        return decision_row(change, width)
    sign = {"left": "−", "joined": "+"}.get(change.change, "")
    took = change.seconds_to_step
    if width < 60:
        text = Text(f"{change.step + 1}: ", style="bold")
        text.append(f"gen{change.generation} {sign}{','.join(change.hosts)}", style="magenta")
        text.append(f" {change.cause}" if change.cause else "")
        return text.append("" if took is None else f" {took:.1f}s")
    text = Text(f"step {change.step + 1:<5}", style="bold")
    text.append(f"gen {change.generation}  {', '.join(change.hosts)} {change.change}",
                style="magenta")
    text.append(f" ({change.cause})" if change.cause else "")
    text.append(f"  {change.world_size} ranks")
    if change.phases:  # a join: where its time went (its admission ends at the next step)
        return text.append(f"  {change.phases_text()}", style="grey50")
    text.append("" if took is None else f"  next step in {took:.1f} s", style="grey50")
    return text


class BalancerPanel(Vertical):
    """How the global batch is split now (several shares to a line when one a line would not
    fit: every rank stays in view) and every change the balancer made."""

    def __init__(self, model: RunModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.border_title = "Balancer"
        self._policy_shown = ""
        self._subtitle_shown = ""
        self._per_line = 1
        self._split_height = -1

    def compose(self) -> ComposeResult:
        yield Static(policy_line(self.model), id="policy")
        yield LinesView(row_count=lambda: line_count(len(self.model.split), self._per_line),
                        row_text=self._split_line,
                        signature=lambda: (tuple(self.model.split), len(self.model.ranks),
                                           self._per_line),
                        id="split")
        yield LinesView(row_count=lambda: len(self.model.changes),
                        row_text=lambda i, w: change_row(self.model.changes[i], w),
                        follow=True, signature=self._decisions_signature, id="decisions")

    def _split_line(self, index: int, width: int) -> Text:
        return packed_line(index, self._per_line, len(self.model.split), width,
                           lambda i, w: split_row(self.model, i, w))

    def _decisions_signature(self) -> object:
        changes = self.model.changes
        return len(changes), sum(isinstance(d, Move) and d.measured_gain is not None
                                 for d in changes)

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """Shares per line and the split's height for the panel's size and ranks: what the
        policy line and the decisions' fewest lines leave."""
        size = self.content_size
        if size.height <= 0:
            return
        count = len(self.model.split)
        least = DECISIONS_LEAST[size.height >= TALL_FROM]
        room = max(1, size.height - 1 - least)
        self._per_line = per_line(count, room, size.width, split_least(self.model))
        height = min(room, line_count(count, self._per_line))
        if height != self._split_height:  # a change re-lays out the screen: only on change
            self._split_height = height
            self.query_one("#split", LinesView).styles.height = height

    def sync(self) -> None:
        """Redraw from the model."""
        self._fit()
        line = policy_line(self.model)
        if line.plain != self._policy_shown:  # an update re-lays out the screen: only on change
            self._policy_shown = line.plain
            self.query_one("#policy", Static).update(line)
        count = len(self.model.changes)
        subtitle = f"{count} decision{'s' if count != 1 else ''}"
        if subtitle != self._subtitle_shown:  # setting it repaints the whole panel
            self._subtitle_shown = self.border_subtitle = subtitle
        for view in self.query(LinesView):
            view.sync()
