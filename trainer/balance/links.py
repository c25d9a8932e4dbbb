"""The links between hosts as the pre-flight check measured them (``remote/checks/mesh.py``).

Every host opens a TCP connection to every other host on the address the run uses, then, in
rounds where each host sends to one peer and receives from another (as in a ring all-reduce),
sends a few MB to each peer and times their arrival, after a few one-byte round trips. One
``PairLink`` per direction is the result; the check's report carries them
(``CheckReport.links``), and so do the launch facts. They live here, in ``trainer/``, so that
the trainer and the balancer can read them with no import of ``remote``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

PROBE_BYTES = 1 << 19
"""Bytes of one probe of a link's throughput: the receiver times each slice this long."""


@dataclass(frozen=True, kw_only=True)
class PairLink:
    """One direction between two hosts, as measured (names are cluster.toml's)."""

    source: str
    """The host that opened the connection and sent."""
    target: str
    """The host that listened and received."""
    address: str
    """``target``'s address the connection went to (the one its ranks use)."""
    port: int
    """The port ``target``'s listener held (chosen by its system)."""
    reached: bool
    """True when the connection opened."""
    error: str = ""
    """Why it did not ("" when it did)."""
    rtt_s: float | None = None
    """Median round trip of a one-byte message over the connection (None: not measured)."""
    bytes_per_s: float | None = None
    """Throughput from ``source`` to ``target`` (None: not measured)."""
    rate_probes: tuple[float, ...] = ()
    """Bytes/s of each slice of the measurement as the receiver timed it (``PROBE_BYTES``
    each, the slow start's first slice left out): what the median and spread are taken over."""
    rtt_probes: tuple[float, ...] = ()
    """Each one-byte round trip, seconds (``rtt_s`` is their median)."""
    measured_t: float | None = None
    """When the check measured it (Unix seconds; None: not known)."""

    def __post_init__(self) -> None:
        # Read back from JSON the probes are lists: as tuples the link stays hashable.
        object.__setattr__(self, "rate_probes", tuple(self.rate_probes))
        object.__setattr__(self, "rtt_probes", tuple(self.rtt_probes))


def pair_links_json(links: Iterable[PairLink]) -> str:
    """The links as one JSON array (what a run directory or an environment would carry)."""
    return json.dumps([asdict(link) for link in links])


def pair_links_from_json(text: str) -> tuple[PairLink, ...]:
    """``pair_links_json``'s inverse."""
    return tuple(PairLink(**item) for item in json.loads(text))


def pair_throughput(links: Sequence[PairLink]) -> dict[tuple[str, str], float]:
    """Bytes/s per unordered pair ``(a, b)`` (a < b): the slower of its two directions, for
    pairs measured both ways."""
    one_way = {(link.source, link.target): link.bytes_per_s for link in links
               if link.bytes_per_s is not None}
    pairs: dict[tuple[str, str], float] = {}
    for (source, target), rate in one_way.items():
        back = one_way.get((target, source))
        if back is not None:
            pairs[tuple(sorted((source, target)))] = min(rate, back)  # type: ignore[index]
    return pairs


def host_links(links: Sequence[PairLink]) -> dict[str, float]:
    """Bytes/s of each host's own link: the fastest of its pairs (a pair is no faster than
    the slower of its two links, so the best peer shows this host's link). A host with no
    pair measured both ways is left out."""
    best: dict[str, float] = {}
    for (a, b), rate in pair_throughput(links).items():
        for name in (a, b):
            best[name] = max(best.get(name, 0.0), rate)
    return best


def round_trips(links: Sequence[PairLink]) -> Mapping[str, float]:
    """Each host's smallest measured round trip to another host, seconds."""
    best: dict[str, float] = {}
    for link in links:
        if link.rtt_s is not None:
            for name in (link.source, link.target):
                best[name] = min(best.get(name, link.rtt_s), link.rtt_s)
    return best
