"""``corral console --serve``: the same console in a browser, through textual-serve.

textual-serve starts one process per browser connection: each tab runs its own console
(``corral console --served ROLE``), which attaches to the cluster's live run the way
``corral attach`` does (a second follower reads the run and leaves the local copy to the first,
``remote/records/collected.py``); a read-only tab sends no ``[notify]`` notices (the run's own
follower does, once). This module is the web server in front of them:

- it listens on 127.0.0.1 only (``SERVE_HOST``); from another machine, ``ssh -L`` (docs/console.md);
- every page and every session needs a one-time token, made here at start, printed once and
  kept in this process's memory only: never in a file, an environment variable or a command
  line (a console process gets its role, ``view`` or ``control``, never the token);
- the view token gives a read-only console (``RunControls.read_only``: the keys that would
  change a run answer "read-only view"); ``--controls`` makes a second token, for the full
  console.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.util
import secrets
import shlex
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from profiles.user_errors import CorralError, UsageError

if TYPE_CHECKING:
    from aiohttp import web

SERVE_HOST = "127.0.0.1"
"""Where the browser view listens: this machine only (other machines come through ``ssh -L``)."""
DEFAULT_PORT = 8700
"""``--port`` when none is given."""
TOKEN_BYTES = 24
"""Random bytes in each token (32 URL-safe characters)."""
REAP_S = 5.0
"""How long a closed tab's console process gets to exit before it is killed."""

Role = Literal["view", "control"]
ROLES: tuple[Role, ...] = ("view", "control")


@dataclass(frozen=True)
class Tokens:
    """The tokens of one ``corral console --serve``; they live in this process only."""

    view: str
    """Opens a read-only console."""
    control: str | None
    """Opens the console with its controls (None: no such link, ``--controls`` not given)."""

    @classmethod
    def new(cls, *, controls: bool) -> Tokens:
        return cls(view=secrets.token_urlsafe(TOKEN_BYTES),
                   control=secrets.token_urlsafe(TOKEN_BYTES) if controls else None)

    def role(self, given: str) -> Role | None:
        """The role ``given`` opens, or None for no token of this server (compared in
        constant time: a wrong guess learns nothing of the right one)."""
        if self.control is not None and hmac.compare_digest(given, self.control):
            return "control"
        if hmac.compare_digest(given, self.view):
            return "view"
        return None


def console_command(config: Path, role: Role) -> str:
    """The shell command textual-serve runs for a tab of ``role``: this Python, this
    cluster.toml, the role; ``exec`` so that the console is the process that gets stopped."""
    words = [sys.executable, "-m", "console", "-c", str(config.expanduser().resolve()),
             "console", "--served", role]
    return "exec " + shlex.join(words)


def require_textual_serve() -> None:
    """A clear error when the ``serve`` extra is missing (it is imported only here)."""
    if importlib.util.find_spec("textual_serve") is None:
        raise UsageError("corral console --serve needs textual-serve: pip install "
                         "'corral[serve]' (or pip install textual-serve)",
                         title="no textual-serve")


REFUSED = ("corral: refused: open the URL that `corral console --serve` printed; it ends in "
           "?token=...\n")


def build_server(commands: Mapping[Role, str], tokens: Tokens, port: int) -> Any:
    """The textual-serve ``Server`` of the browser view: pages and sessions behind a token,
    each session's console run with its role's command."""
    from aiohttp import web
    from textual_serve.app_service import AppService
    from textual_serve.server import Server

    class ConsoleServer(Server):
        async def _make_app(self) -> web.Application:
            app: web.Application = await super()._make_app()
            app.router.add_get("/ws/{token}", self.handle_session)
            app.middlewares.append(token_gate(tokens))
            return app

        async def on_startup(self, app: web.Application) -> None:
            """Quiet: ``serve_console`` prints what the operator needs (the links)."""

        async def handle_index(self, request: web.Request) -> web.StreamResponse:
            """The page, its session socket at ``/ws/<token>`` on the host the browser used
            (so an ``ssh -L`` to any local port works)."""
            import aiohttp_jinja2

            token = request.query.get("token", "")
            scheme = "wss" if request.secure else "ws"
            context = {"font_size": 16, "application": {"name": "corral"},
                       "app_websocket_url": f"{scheme}://{request.host}/ws/{token}",
                       "config": {"static": {"url": "/static/"}}}
            return aiohttp_jinja2.render_template("app_index.html", request, context)

        async def handle_session(self, request: web.Request) -> web.StreamResponse:
            """One tab: its own console process, of the role its token opens."""
            socket = web.WebSocketResponse(heartbeat=15)
            await socket.prepare(request)

            async def close() -> None:  # the console quit: the tab shows "Session ended"
                await socket.close()

            service = AppService(commands[request["corral_role"]],
                                 write_bytes=socket.send_bytes, write_str=socket.send_str,
                                 close=close, download_manager=self.download_manager)
            size = [_number(request.query.get(k), d) for k, d in (("width", 80), ("height", 24))]
            await service.start(*size)
            try:
                await self._process_messages(socket, service)
            finally:
                await service.stop()
                await _reap(service._process)  # textual-serve keeps it private
                if not socket.closed:
                    await socket.close()
            return socket

    return ConsoleServer(commands["view"], host=SERVE_HOST, port=port, title="corral")


def token_gate(tokens: Tokens) -> Any:
    """The middleware in front of every path: a token of this server, the page's in its
    query, the session's in its path; its role goes on the request for the session's handler.
    Two kinds of path pass without one: textual-serve's own scripts and styles (no data), and
    a download (a screenshot the palette delivers), which textual.js fetches without the page's
    query but by a key of 122 random bits that only a tab with a token is ever told."""
    from aiohttp import web

    @web.middleware
    async def gate(request: web.Request,
                   handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        path = request.path
        if path.startswith(("/static/", "/download/")):
            return await handler(request)
        given = path[len("/ws/"):] if path.startswith("/ws/") else request.query.get("token", "")
        role = tokens.role(given)
        if role is None:
            raise web.HTTPForbidden(text=REFUSED)
        request["corral_role"] = role
        return await handler(request)

    return gate


def _number(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


async def _reap(process: asyncio.subprocess.Process | None) -> None:
    """Wait for a tab's console to exit after textual-serve told it to quit; kill it (it is
    this server's own child) if it has not within ``REAP_S``."""
    if process is None or process.returncode is not None:
        return
    try:
        await asyncio.wait_for(process.wait(), REAP_S)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()


@dataclass(frozen=True)
class ServeLinks:
    """What ``corral console --serve`` prints at start."""

    view: str
    """The read-only console's URL (with its token)."""
    control: str | None
    """The full console's URL, with ``--controls``."""


async def serve_console(
    config: Path, *, port: int = DEFAULT_PORT, controls: bool = False,
    announce: Callable[[ServeLinks], None], stop: asyncio.Event | None = None,
    command: Callable[[Role], str] | None = None,
) -> int:
    """Serve the console on ``SERVE_HOST:port`` until ``stop`` is set (or SIGINT/SIGTERM),
    handing the links to ``announce`` once listening. ``command`` gives a role's console
    command (default: ``console_command`` on ``config``). A port that cannot be had is a
    ``UsageError`` naming ``--port``."""
    from aiohttp import web

    require_textual_serve()
    tokens = Tokens.new(controls=controls)
    commands = {role: (command or (lambda r: console_command(config, r)))(role)
                for role in ROLES}
    server = build_server(commands, tokens, port)
    runner = web.AppRunner(await server._make_app(), access_log=None)
    await runner.setup()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        try:
            await web.TCPSite(runner, SERVE_HOST, port).start()
        except OSError as exc:
            raise UsageError(f"cannot listen on {SERVE_HOST}:{port} ({exc.strerror or exc}): "
                             "pick another port with --port N", title="corral console "
                             "--serve") from None
        bound = runner.addresses[0][1]
        base = f"http://{SERVE_HOST}:{bound}/?token="
        announce(ServeLinks(view=base + tokens.view,
                            control=None if tokens.control is None else base + tokens.control))
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        await stop.wait()
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)
        await runner.cleanup()
    return 0


def run_served(config_path: Path, role: Role) -> int:
    """One browser tab's console (``corral console --served ROLE``, started by the server):
    attached to the cluster's live run if there is one. A ``view`` tab is read-only and sends
    no ``[notify]`` notices (the run's own follower does; ten watchers must not send ten); a
    ``control`` tab is the console as ``corral console`` opens it, notices included (a run it
    starts is followed by it alone)."""
    from console.app import run_console
    from console.session import Session, load_config, open_controller
    from remote.api import FINAL_RUN_STATES

    try:
        config = load_config(config_path)
        if role != "control":
            config = replace(config, notify=replace(config.notify, urls=(), bell=False))
        live = [r.run_id for r in Session(config_path, config=config).recorded_runs()
                if r.state not in FINAL_RUN_STATES]
    except CorralError as exc:
        print(f"corral: {exc.title}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return run_console(config_path, attach_run=live[0] if live else None,
                       controller=open_controller(config), read_only=role != "control",
                       terminal=False)  # its keys come from the browser, through the pipe
