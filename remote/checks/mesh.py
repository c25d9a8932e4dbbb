"""The full-mesh check: every host opens a TCP connection to every other host, and measures it.

Gloo and NCCL connect every pair of ranks directly, on ports the system picks, at the address
of the interface corral chose for each host; a check of the master's rendezvous port alone
passes when a firewall or NAT stands between two workers, and the run then hangs at its first
collective. So, before anything starts:

1. every host starts a listener on that address, on a port its system picks (``LISTEN_PY``),
   and prints the port;
2. every host then connects to every other host's listener, all at once (``CONNECT_PY``,
   ``CONNECT_S`` per attempt), which proves both directions of every pair;
3. the same program measures each reachable pair: in round k host i sends to host i+k (each
   host sends to one peer and receives from another, as in a ring all-reduce) a few one-byte
   round trips, then up to ``MEASURE_BYTES`` for at most ``round_s`` seconds; the receiver
   times their arrival, each ``PROBE_BYTES`` slice too (the probes the network view takes a
   median and spread over), and answers with what it counted.

The listeners end when corral closes their input (always, in a ``finally``), or at their own
deadline: nothing is left listening. What was found is one ``PairLink`` per direction
(``trainer/balance/links.py``); ``mesh_verdict.py`` words it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig, HostSection
from remote.hosts.interpreter import last_json, python_c
from remote.hosts.pool import HostPool
from trainer.balance.links import PROBE_BYTES, PairLink

CONNECT_S = 3.0
"""Seconds one connection attempt may take before the pair counts as blocked (a firewall
that drops packets answers nothing: only this timeout ends the attempt)."""
MEASURE_BYTES = 4 << 20
"""Bytes sent to each peer to measure the pair's throughput (fewer when ``round_s`` ends
first)."""
MEASURE_TOTAL_S = 8.0
"""Seconds all the measuring rounds of one host may take together: each round gets this over
the number of peers, at most ``ROUND_MAX_S``."""
ROUND_MAX_S = 1.0
"""The longest one round of sending to one peer may last."""
PINGS = 5
"""One-byte round trips per pair; the median is the pair's round-trip time."""
LISTENER_START_S = 60.0
"""Seconds allowed for a listener's interpreter to start and report its port."""

# argv: address, seconds, probe bytes. Prints {"port"} (or {"error"}) at once, then serves until
# its stdin closes or its deadline. A connection that starts with "m" is measured: "p" bytes are
# echoed, then after "d" everything up to EOF is counted and timed, and {"bytes", "seconds",
# "probes"} answered (probes: bytes/s of each slice of probe bytes after the first).
LISTEN_PY = """\
import json, os, select, socket, sys, threading, time
addr, deadline = sys.argv[1], time.time() + float(sys.argv[2])
probe = int(sys.argv[3])
try:
    s = socket.create_server((addr, 0), family=socket.AF_INET6 if ":" in addr else socket.AF_INET)
except OSError as exc:
    print(json.dumps({"error": str(exc)}), flush=True)
    sys.exit(0)
port = s.getsockname()[1]
print(json.dumps({"port": port}), flush=True)
def half_open():
    found = set()
    try:
        with open("/proc/net/tcp") as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        return found
    for row in rows:
        w = row.split()
        if len(w) > 3 and w[3] == "03" and int(w[1].split(":")[1], 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(w[2].split(":")[0])[::-1]))
    return found
seen = set()
def serve(c):
    with c:
        c.settimeout(max(1.0, deadline - time.time()))
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if c.recv(1) != b"m":
            return
        while c.recv(1) == b"p":
            c.sendall(b"p")
        got, start, buf = 0, time.perf_counter(), bytearray(1 << 16)
        marks = [(start, 0)]
        while True:
            n = c.recv_into(buf)
            if not n:
                break
            got += n
            if got - marks[-1][1] >= probe:
                marks.append((time.perf_counter(), got))
        seconds = time.perf_counter() - start
        probes = [(b - a) / (u - t) for (t, a), (u, b) in zip(marks[1:], marks[2:]) if u > t]
        c.sendall((json.dumps({"bytes": got, "seconds": seconds, "probes": probes})
                   + "\\n").encode())
while time.time() < deadline:
    ready = select.select([s, 0], [], [], min(0.5, max(0.0, deadline - time.time())))[0]
    if 0 in ready and not os.read(0, 1):
        break
    if s in ready:
        threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
    for peer in sorted(half_open() - seen):
        seen.add(peer)
        print(json.dumps({"syn_from": peer}), flush=True)
s.close()
"""

# argv: peers as JSON [[name, address, port], ...] in round order, connect seconds, bytes to
# measure with (0: reach only), seconds per round, pings. Prints {name: result} as one line.
CONNECT_PY = """\
import json, socket, statistics, sys, threading, time
peers, connect_s = json.loads(sys.argv[1]), float(sys.argv[2])
measure, round_s, pings = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
out = {}
def reach(name, addr, port):
    try:
        socket.create_connection((addr, port), timeout=connect_s).close()
        out[name] = {"ok": True}
    except OSError as exc:
        out[name] = {"ok": False, "error": str(exc) or type(exc).__name__}
threads = [threading.Thread(target=reach, args=p) for p in peers]
for t in threads:
    t.start()
for t in threads:
    t.join()
def gauge(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 18)
    c.sendall(b"m")
    rtts = []
    for _ in range(pings):
        t = time.perf_counter()
        c.sendall(b"p")
        c.recv(1)
        rtts.append(time.perf_counter() - t)
    c.sendall(b"d")
    chunk, sent, end = bytes(1 << 16), 0, time.perf_counter() + round_s
    while sent < measure and time.perf_counter() < end:
        c.sendall(chunk)
        sent += len(chunk)
    c.shutdown(socket.SHUT_WR)
    return dict(json.loads(c.makefile().readline()), rtt_s=statistics.median(rtts), rtts=rtts)
for name, addr, port in peers if measure else []:
    if out[name]["ok"]:
        try:
            with socket.create_connection((addr, port), timeout=connect_s) as c:
                c.settimeout(4 * round_s + connect_s + 5)
                out[name].update(gauge(c))
        except (OSError, ValueError) as exc:
            out[name]["measure_error"] = str(exc) or type(exc).__name__
print(json.dumps(out))
"""


@dataclass(frozen=True, kw_only=True)
class MeshResult:
    """What the full-mesh check found."""

    links: tuple[PairLink, ...]
    """One per direction between the hosts that took part."""
    listen_errors: Mapping[str, str]
    """Hosts whose listener could not start, and why."""
    half_open: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Per host, the addresses whose connection request reached its listener but never
    completed: the host's reply was dropped on the way back (a rule on the requesting side)."""
    seconds: float
    """Wall time of the whole check (listeners, connections, measurements)."""


def round_seconds(peers: int) -> float:
    """Seconds one measuring round may last with ``peers`` peers."""
    return min(ROUND_MAX_S, MEASURE_TOTAL_S / max(peers, 1))


def ring_order(names: Sequence[str], me: str) -> list[str]:
    """The peers of ``me`` in round order: round k sends to the host k places after it."""
    i = list(names).index(me)
    return [names[(i + k) % len(names)] for k in range(1, len(names))]


async def _first_line(lines: AsyncIterator[str]) -> str | None:
    with contextlib.suppress(StopAsyncIteration):
        return await lines.__anext__()
    return None


class _Listeners:
    """Every host's listener: opened at once, closed (their input) at the end, always."""

    def __init__(self, pool: HostPool) -> None:
        self._pool = pool
        self._streams: list[AsyncIterator[str]] = []
        self._readers: list[asyncio.Future[None]] = []
        self.syn_from: dict[str, set[str]] = {}
        """Per host, the addresses whose connection request reached its listener but never
        completed (half-open: the host's reply was dropped on its way back)."""

    async def _rest(self, name: str, lines: AsyncIterator[str]) -> None:
        """The listener's later lines: each address it saw half-open (read, so that the
        listener never blocks on a full pipe)."""
        async for line in lines:
            found = last_json(line) or {}
            if isinstance(found.get("syn_from"), str):
                self.syn_from.setdefault(name, set()).add(found["syn_from"])

    async def open(self, host: HostSection, address: str, seconds: float) -> int | str:
        """The port the host's listener holds, or why it did not start."""
        try:
            transport = await self._pool.get(host.name)
        except CorralError as exc:
            return exc.message
        lines = transport.stream(python_c(host, LISTEN_PY, address, f"{seconds:.1f}",
                                          str(PROBE_BYTES)))
        self._streams.append(lines)
        reader = asyncio.ensure_future(_first_line(lines))
        try:
            await asyncio.wait({reader}, timeout=LISTENER_START_S)
        finally:
            if not reader.done():
                reader.cancel()
                await asyncio.wait({reader})
        if reader.cancelled() or reader.exception() is not None:
            return "the listener did not start"
        opened = last_json(reader.result() or "") or {}
        if "port" in opened:
            self._readers.append(asyncio.ensure_future(self._rest(host.name, lines)))
            return int(opened["port"])
        return str(opened.get("error", "the listener did not start"))

    async def close(self) -> None:
        for reader in self._readers:  # a stream is closed only once nothing is inside it
            reader.cancel()
        if self._readers:
            await asyncio.wait(self._readers)
        self._readers.clear()
        for lines in self._streams:
            close = getattr(lines, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        self._streams.clear()


def _numbers(found: object) -> tuple[float, ...]:
    """A reply's list of probes (nothing from an older listener or a bad reply)."""
    if not isinstance(found, list):
        return ()
    return tuple(float(x) for x in found if isinstance(x, (int, float)) and x > 0)


def _links_from(source: str, reply: Mapping[str, object],
                targets: Mapping[str, tuple[str, int]]) -> list[PairLink]:
    links, now = [], time.time()
    for target, (address, port) in targets.items():
        got = reply.get(target)
        found: dict[str, object] = got if isinstance(got, dict) else {
            "ok": False, "error": "no answer from the connecting program"}
        count, seconds = found.get("bytes"), found.get("seconds")
        rate = (float(count) / float(seconds)  # type: ignore[arg-type]
                if count and isinstance(seconds, (int, float)) and seconds > 0 else None)
        rtt = found.get("rtt_s")
        links.append(PairLink(source=source, target=target, address=address, port=port,
                              reached=bool(found.get("ok")), error=str(found.get("error", "")),
                              rtt_s=float(rtt) if isinstance(rtt, (int, float)) else None,
                              bytes_per_s=rate, rate_probes=_numbers(found.get("probes")),
                              rtt_probes=_numbers(found.get("rtts")), measured_t=now))
    return links


async def _connect_all(pool: HostPool, host: HostSection, names: Sequence[str],
                       where: Mapping[str, tuple[str, int]], measure: bool) -> list[PairLink]:
    peers = ring_order(names, host.name)
    targets = {name: where[name] for name in peers}
    round_s = round_seconds(len(peers))
    argv = [json.dumps([[n, *targets[n]] for n in peers]), str(CONNECT_S),
            str(MEASURE_BYTES if measure else 0), f"{round_s:.3f}", str(PINGS)]
    try:
        transport = await pool.get(host.name)
        done = await transport.run(python_c(host, CONNECT_PY, *argv),
                                   timeout=CONNECT_S + len(peers) * (4 * round_s + 5) + 30)
        reply = last_json(done.stdout) or {name: {"ok": False, "error": (
            done.stderr or done.stdout).strip()[-200:] or "no answer"} for name in peers}
    except CorralError as exc:
        reply = {name: {"ok": False, "error": f"the test did not run: {exc.message}"}
                 for name in peers}
    return _links_from(host.name, reply, targets)


def _pairs(names: Sequence[str], me: str, hub: str | None) -> list[str]:
    """The hosts of ``names`` whose pairs with ``me`` are tested (``me`` among them): every
    one, or with a ``hub`` only the pairs it is in."""
    if hub is None or me == hub:
        return list(names)
    return [name for name in names if name in (me, hub)]


async def check_mesh(config: ClusterConfig, pool: HostPool, addresses: Mapping[str, str],
                     *, measure: bool = True, hub: str | None = None) -> MeshResult:
    """Every host of ``addresses`` (name → the address its ranks use) connects to every other
    one, and with ``measure`` times each pair; cluster.toml's host order is the ring's. With
    ``hub`` (a joiner) only the pairs with it are tested: the others were at the launch."""
    started = time.monotonic()
    hosts = [h for h in config.hosts if h.name in addresses]
    listeners = _Listeners(pool)
    budget = LISTENER_START_S + CONNECT_S + len(hosts) * (4 * ROUND_MAX_S + 5) + 60
    try:
        opened = await asyncio.gather(*(listeners.open(h, addresses[h.name], budget)
                                        for h in hosts))
        where = {h.name: (addresses[h.name], port) for h, port in zip(hosts, opened, strict=True)
                 if isinstance(port, int)}
        errors = {h.name: port for h, port in zip(hosts, opened, strict=True)
                  if isinstance(port, str)}
        names = [h.name for h in hosts if h.name in where]
        tested = {h.name: _pairs(names, h.name, hub) for h in hosts if h.name in where}
        found = await asyncio.gather(*(_connect_all(pool, h, tested[h.name], where, measure)
                                       for h in hosts if len(tested.get(h.name, ())) > 1))
    finally:
        await listeners.close()
    links = tuple(link for host_links in found for link in host_links)
    return MeshResult(links=links, listen_errors=errors, seconds=time.monotonic() - started,
                      half_open={h: frozenset(a) for h, a in listeners.syn_from.items()})
