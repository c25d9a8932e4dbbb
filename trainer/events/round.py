"""The ``round`` event of ``--exchange local`` (docs/events.md, docs/lowcomm.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, kw_only=True)
class RoundEvent:
    """Rank 0, ``--exchange local`` (APPROXIMATE): a round of inner steps and its exchange
    ended (docs/lowcomm.md)."""

    kind: ClassVar[str] = "round"
    t: float
    rank: int
    step: int
    """The global step the round ended at (global batches consumed by every island so far)."""
    first_step: int
    """The global step of the round's first batch."""
    inner_steps: tuple[int, ...]
    """Inner steps each island took, in island order (in proportion to its speed)."""
    islands: tuple[tuple[int, ...], ...]
    """The ranks of each island."""
    inner_s: tuple[float, ...] = ()
    """Each island's time for its inner steps (emulated slowdown included)."""
    round_s: float
    """Wall time of the round on rank 0: inner steps, then the exchange."""
    exchange_s: float
    """The exchange's time exposed at the round's end (quantising, the wait, the outer step):
    the shortest of the island leaders' (the last to arrive waits for nobody)."""
    exchanged_bytes: int
    """Bytes each island leader sent in the round's exchange between islands."""
    bytes_per_sample: float
    """``exchanged_bytes`` per sample the round trained on."""
    round_steps: int
    """Inner steps per island on average the next round plans (chosen or given)."""
    compression: str = "none"
    """``outer_compression``: what the islands sent (``none``: float32; ``int8``, ``int4``)."""
    overlap: bool = False
    """``outer_overlap``: the exchange ran behind the next round's inner steps (the islands
    started it from the eager estimate; the average reached the anchor one round late);
    ``exchange_s`` is then what stayed exposed."""
    in_flight_s: float = 0.0
    """``outer_overlap``: the exchange applied this round, from its start (the round before's
    end) until seen complete (noted between inner steps; the shortest of the island leaders')."""
    island_exchange_s: tuple[float, ...] = ()
    """Each island leader's exposed exchange, in island order (``exchange_s`` is the least):
    an island's excess over the least is its wait at the round's end for a slower island."""
    inner_cpu_s: tuple[float, ...] = ()
    """Each island leader's process CPU seconds in its inner steps (all its threads): over
    ``inner_s``, the cores it got (below its host's share: a busy machine held it back)."""
    island_hosts: tuple[str, ...] = ()
    """Live membership (islands are hosts): each island's host, in island order: the islands
    of this round, as joins and leaves changed them; empty without live membership."""
    dropped: tuple[str, ...] = ()
    """Hosts lost during the round: they trained, their change was left out of its average
    (the survivors' outer step is over the islands that completed the round)."""

    def islands_text(self) -> str:
        """The round's island set for the console and ``corral report``: ``h0 | h1 | h3``,
        ``h0 | h3 (h1 lost: dropped)``; empty without live membership."""
        text = " | ".join(self.island_hosts)
        if self.dropped:
            text += f" ({', '.join(self.dropped)} lost: dropped)"
        return text

    def exchange_text(self) -> str:
        """What the console and ``corral report`` say of the round's exchange:
        ``int8, overlapped: 230 bytes/sample, 0.02 s exposed``."""
        return exchange_text(self.compression, self.overlap, self.bytes_per_sample,
                             self.exchange_s)


def exchange_text(compression: str, overlap: bool, bytes_per_sample: float,
                  exposed_s: float) -> str:
    """A round's exchange in words (``RoundEvent.exchange_text``)."""
    how = f"{compression}, overlapped" if overlap else compression
    return f"{how}: {bytes_per_sample:,.0f} bytes/sample, {exposed_s:.2f} s exposed"
