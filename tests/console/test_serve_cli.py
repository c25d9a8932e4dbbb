"""``corral console --serve`` as the operator starts it: the links it prints, the token that
every page needs, 127.0.0.1 only, no token on a command line, and Ctrl-C ends it; the
mistakes it names before anything listens. The browser itself: ``test_serve_browser.py``."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from console.serve import SERVE_HOST, require_textual_serve
from profiles.user_errors import UsageError

REPO = Path(__file__).resolve().parents[2]
CLUSTER_TOML = REPO / "cluster.toml"


def corral(*words: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-u", "-m", "console", "-c", str(CLUSTER_TOML),
                             *words], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def status_of(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def command_lines() -> str:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().decode(errors="replace"))
            except OSError:
                continue
    return "\n".join(lines)


def test_the_links_need_their_tokens_and_ctrl_c_ends_the_server() -> None:
    server = corral("console", "--serve", "--port", "0", "--controls")
    try:
        assert server.stdout is not None
        printed = [server.stdout.readline() for _ in range(3)]
        links = [re.search(r"(http://\S+)", line) for line in printed[:2]]
        view, control = (found.group(1) for found in links if found is not None)
        assert "read-only" in printed[0] and "controls" in printed[1], printed
        assert view.startswith(f"http://{SERVE_HOST}:")
        base, view_token = view.split("/?token=")
        control_token = control.split("/?token=")[1]
        assert view_token != control_token and len(view_token) >= 32

        assert status_of(base + "/")[0] == 403
        code, body = status_of(base + "/?token=not-it")
        assert code == 403 and "refused" in body
        for token in (view_token, control_token):
            code, page = status_of(f"{base}/?token={token}")
            assert code == 200 and f"/ws/{token}" in page  # the tab's session, this token's
        # Neither token on any process's command line (the tabs' consoles get their role).
        assert view_token not in command_lines() and control_token not in command_lines()
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err


def test_mistakes_are_named_before_anything_listens() -> None:
    with socket.socket() as taken:
        taken.bind((SERVE_HOST, 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = corral("console", "--serve", "--port", port)
        _, err = busy.communicate(timeout=60)
    assert busy.returncode == 2 and f"{SERVE_HOST}:{port}" in err and "--port" in err, err
    assert "Traceback" not in err
    alone = corral("console", "--port", "9000")
    _, err = alone.communicate(timeout=60)
    assert alone.returncode == 2 and "--serve" in err, err


def test_without_textual_serve_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "textual_serve" else real(name, *rest))
    with pytest.raises(UsageError, match=r"corral\[serve\]"):
        require_textual_serve()
