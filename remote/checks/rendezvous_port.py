"""The rendezvous-port check: free on the master and reachable from every worker, for real.

A short-lived listener starts on the master (on the configured port, or any free one for
``"auto"``) and prints the port it holds; every worker then opens a TCP connection to
``master_addr:port``. The listener ends once every worker connected, at its deadline, or when
corral closes its input, so a failed check never leaves it behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

from profiles.user_errors import CorralError
from remote.config.cluster import ClusterConfig, HostSection
from remote.events import CheckItem
from remote.hosts.interpreter import last_json, python_c, python_label
from remote.hosts.pool import HostPool
from remote.hosts.transport import Transport

PORT_TEST_S = 8.0
"""Seconds the listener waits for every worker, and each worker keeps trying to connect."""
LISTENER_START_S = 60.0
"""Seconds allowed for the listener's interpreter to start and report its port."""

# argv: port (0 = any free one), workers to wait for, seconds. Prints {"bound", "port"} at
# once, then {"peers"} at the end. Ends early when its stdin closes (corral gave up).
LISTEN_PY = """\
import json, os, select, socket, sys, time
port, want, deadline = int(sys.argv[1]), int(sys.argv[2]), time.time() + float(sys.argv[3])
try:
    if socket.has_dualstack_ipv6():
        s = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
    else:
        s = socket.create_server(("", port))
except OSError as exc:
    print(json.dumps({"bound": False, "error": str(exc)}), flush=True)
    sys.exit(0)
print(json.dumps({"bound": True, "port": s.getsockname()[1]}), flush=True)
peers = 0
while peers < want and time.time() < deadline:
    ready = select.select([s, 0], [], [], max(0.0, deadline - time.time()))[0]
    if 0 in ready and not os.read(0, 1):
        break
    if s in ready:
        s.accept()[0].close()
        peers += 1
print(json.dumps({"peers": peers}), flush=True)
"""

# argv: host, port, seconds. Retries refusals (the listener may not be up yet) until then.
CONNECT_PY = """\
import json, socket, sys, time
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])
error = "no attempt"
while time.time() < deadline:
    try:
        socket.create_connection((host, port), timeout=max(0.1, deadline - time.time())).close()
        print(json.dumps({"ok": True}))
        sys.exit(0)
    except OSError as exc:
        error = str(exc) or type(exc).__name__
        time.sleep(0.05)
print(json.dumps({"ok": False, "error": error}))
"""


AUTO_PORT_RANGE = (30000, 32767)
"""For ``rendezvous_port = "auto"`` the check first tries a random port from this range (below
Linux's ephemeral range), so that the workers can try it in their own probe command at once;
only when it is taken does a second round let the master pick any free port."""


def auto_candidate() -> int:
    """A random port to try first for ``"auto"``."""
    return random.randint(*AUTO_PORT_RANGE)


def connect_command(host: HostSection, master_addr: str, port: int) -> str:
    """The worker's side of the port test: connect to ``master_addr:port``, retrying refusals
    until ``PORT_TEST_S`` (the listener may not be up yet); prints one JSON line."""
    return python_c(host, CONNECT_PY, master_addr, str(port), str(PORT_TEST_S))


RENDEZVOUS_CHECK = "rendezvous-port"
"""The check item of torchrun's rendezvous port (``[cluster] rendezvous_port``)."""


def _item(host: HostSection, ok: bool, detail: str, hint: str = "",
          name: str = RENDEZVOUS_CHECK) -> CheckItem:
    return CheckItem(host=host.name, name=name, ok=ok, detail=detail, hint=hint)


def connect_item(host: HostSection, master: HostSection, master_addr: str, port: int,
                 stdout: str, stderr: str = "", name: str = RENDEZVOUS_CHECK) -> CheckItem:
    """The worker's ``name`` item (``rendezvous-port`` by default) from ``connect_command``'s
    output."""
    reply = last_json(stdout) or {"ok": False, "error": (stderr or stdout).strip()[-200:]}
    if reply.get("ok"):
        return _item(host, True, f"reaches {master_addr}:{port}", name=name)
    return _item(host, False, f"cannot reach {master_addr}:{port}: {reply.get('error')}",
                 f"allow TCP port {port} into {master.name} (firewall), or set [cluster] "
                 f"master_addr to an address of {master.name} that {host.name} can reach",
                 name=name)


async def connect_worker(pool: HostPool, host: HostSection, master: HostSection,
                         master_addr: str, port: int,
                         name: str = RENDEZVOUS_CHECK) -> CheckItem | None:
    """``host``'s ``name`` item: it connects to ``master_addr:port`` in a command of its own
    (None: the host is unreachable, its own ``reachable`` item says so)."""
    try:
        transport = await pool.get(host.name)
        done = await transport.run(connect_command(host, master_addr, port),
                                   timeout=PORT_TEST_S + 30.0)
    except CorralError:
        return None  # unreachable: the host's own "reachable" check says so
    return connect_item(host, master, master_addr, port, done.stdout, done.stderr, name)


async def _first_line(lines: AsyncIterator[str]) -> str | None:
    with contextlib.suppress(StopAsyncIteration):
        return await lines.__anext__()
    return None


class PortListener:
    """The master's side of the port test: a listener on ``port`` (0: any free one) that
    waits for ``want`` connections, then ends (or when ``close`` closes its input)."""

    def __init__(self, config: ClusterConfig, pool: HostPool, port: int, want: int,
                 name: str = RENDEZVOUS_CHECK) -> None:
        self._config, self._pool, self._port, self._want = config, pool, port, want
        self._name = name
        """The check item it reports as (``rendezvous-port`` by default)."""
        self._lines: AsyncIterator[str] | None = None
        self._reader: asyncio.Future[str | None] | None = None
        self.taken = False
        """True when the listener could not bind the port (something else holds it)."""

    async def open(self) -> list[CheckItem] | int | None:
        """The port it holds; or the master's failed item; None if the master is unreachable."""
        master = self._config.master_host
        try:
            master_t: Transport = await self._pool.get(master.name)
        except CorralError:
            return None
        self._lines = master_t.stream(python_c(master, LISTEN_PY, str(self._port),
                                               str(self._want), str(PORT_TEST_S)))
        self._reader = reader = asyncio.ensure_future(_first_line(self._lines))
        # asyncio.wait, unlike wait_for, leaves the reader alone on timeout or cancellation.
        await asyncio.wait({reader}, timeout=LISTENER_START_S)
        failure = reader.exception() if reader.done() else None
        opened = last_json(reader.result() or "") if reader.done() and not failure else None
        if opened is None:
            why = f": {failure}" if failure else ""
            return [_item(master, False, f"the port-test listener did not start{why}",
                          f"check that {python_label(master)!r} runs on {master.name}",
                          name=self._name)]
        if not opened.get("bound"):
            self.taken = True
            return [_item(master, False,
                          f"port {self._port} not free on {master.name}: {opened.get('error')}",
                          "choose another [cluster] rendezvous_port, or \"auto\"",
                          name=self._name)]
        return int(opened["port"])

    async def close(self) -> None:
        """End the listener (idempotent)."""
        reader, lines = self._reader, self._lines
        self._reader = self._lines = None
        # The generator can only be closed once nothing is inside it: end the reader first.
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait({reader})
        close = getattr(lines, "aclose", None)
        if close is not None:
            await close()


def held_item(config: ClusterConfig, port: int) -> CheckItem:
    """The master's item for a port its listener held."""
    auto = " (auto)" if config.cluster.rendezvous_port == "auto" else ""
    return _item(config.master_host, True, f"port {port} free on {config.master_host.name}{auto}")


async def check_rendezvous_port(
    config: ClusterConfig, pool: HostPool, master_addr: str
) -> tuple[list[CheckItem], int | None]:
    """The master's and every reachable worker's ``rendezvous-port`` items, and the port
    tested (free on the master, None when the test could not run)."""
    master = config.master_host
    setting = config.cluster.rendezvous_port
    workers = [h for h in config.hosts if h.name != master.name]
    listener = PortListener(config, pool, 0 if setting == "auto" else int(setting), len(workers))
    try:
        port = await listener.open()
        if not isinstance(port, int):
            return port or [], None
        replies = await asyncio.gather(*(connect_worker(pool, h, master, master_addr, port)
                                         for h in workers))
    finally:
        await listener.close()
    return [held_item(config, port), *(r for r in replies if r is not None)], port
