"""The console's own terminal (``console/terminal.py``): with a pipe on standard input its keys
still come from the terminal and the piped bytes are no key presses; without any terminal it
refuses, naming the commands for scripts; under a Latin-1 locale every command prints, box
drawing as ASCII, never ``\\u256d`` text nor a ``UnicodeEncodeError``.

The console runs as ``corral`` does, in a pseudo-terminal of 80x24 that is its controlling
terminal; every wait is on what it draws or its exit, with a deadline."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a console process each; the old code started ranks on a pipe

DEADLINE_S = 90.0
LATIN1 = "en_US.ISO-8859-1"
ROOT = Path(__file__).resolve().parents[3]


def _cluster(root: Path) -> Path:
    path = root / "cluster.toml"
    path.write_text(f"""
[cluster]
name = "tty"
run_root = "{root / 'runs'}"
[[hosts]]
name = "one"
address = "local"
gpus = 0
[[hosts]]
name = "two"
address = "local"
gpus = 0
""", encoding="utf-8")
    return path


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, TERM="xterm-256color", PYTHONPATH=str(ROOT), **extra)
    env.pop("NO_COLOR", None)
    return env


class PtyConsole:
    """``corral -c CONFIG`` with a pseudo-terminal as its controlling terminal and output,
    and ``stdin`` (a pipe's end) as its standard input."""

    def __init__(self, config: Path, stdin: int, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))

        def controlling() -> None:  # after setsid: the pty becomes the session's terminal
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console", "-c", str(config)], stdin=stdin, stdout=slave,
            stderr=slave, start_new_session=True, preexec_fn=controlling, pass_fds=(slave,),
            env=env)
        os.close(slave)
        self.output = b""

    def read_until(self, pattern: bytes, deadline: float) -> bool:
        """Read what it draws until ``pattern`` shows (True) or it closes its terminal."""
        while time.monotonic() < deadline:
            if re.search(pattern, self.output):
                return True
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # the console closed its terminal
                    return bool(re.search(pattern, self.output))
        return False

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        os.close(self.master)


def test_piped_bytes_are_no_keys_and_the_terminals_keys_act(tmp_path: Path) -> None:
    config = _cluster(tmp_path)
    reading, writing = os.pipe()
    console = PtyConsole(config, reading, _env())
    os.close(reading)
    try:
        os.write(writing, b"s")  # the old console started a run on every host here
        deadline = time.monotonic() + DEADLINE_S
        assert console.read_until(rb"no run", deadline), console.output[-2000:]
        os.write(console.master, b"q")  # typed at the terminal: it quits
        console.read_until(rb"\x1b\[\?1049l", deadline)  # the screen given back
        assert console.proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0
    finally:
        os.close(writing)
        console.close()
    runs = tmp_path / "runs"
    assert not runs.exists() or not list(runs.iterdir()), list(runs.iterdir())


def test_without_any_terminal_the_console_refuses_naming_the_commands_for_scripts(
        tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "console", "-c", str(_cluster(tmp_path))],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          start_new_session=True, env=_env(), timeout=DEADLINE_S)
    assert done.returncode == 2, done
    said = " ".join(done.stderr.split())
    assert "corral run" in said and "corral attach --headless" in said, said
    assert "Traceback" not in done.stderr and not done.stdout.strip()


@pytest.fixture(scope="module")
def latin1() -> str:
    """``LATIN1``, made with ``localedef`` where it is missing (as root)."""
    def present() -> bool:
        names = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout
        return "en_US.iso88591" in names.split()
    if not present() and os.geteuid() == 0:
        subprocess.run(["localedef", "-i", "en_US", "-f", "ISO-8859-1", LATIN1],
                       capture_output=True)
    if not present():
        pytest.skip(f"no {LATIN1} locale (apt-get install locales; localedef -i en_US "
                    f"-f ISO-8859-1 {LATIN1})")
    return LATIN1


def test_report_under_latin1_prints_ascii_boxes(tmp_path: Path, latin1: str) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "remote"))
    from recorded import info, synthetic_run, write_recorded

    config = _cluster(tmp_path)
    write_recorded(tmp_path / "runs" / "tty-f", info(
        "tty-f", "failed", detail="two rank 1 failed: exit 1", cluster="tty"),
        synthetic_run(steps=12, end="failed", error="RuntimeError: out of memory"))
    done = subprocess.run([sys.executable, "-m", "console", "-c", str(config), "report",
                           "tty-f"], capture_output=True, env=_env(LC_ALL=latin1),
                          timeout=DEADLINE_S)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr[-800:]
    text = done.stdout.decode("latin-1")
    assert "failed after step 12/12" in " ".join(text.split())
    assert "+---" in text and "\\u25" not in text


def test_the_console_under_latin1_draws_ascii(tmp_path: Path, latin1: str) -> None:
    console = PtyConsole(_cluster(tmp_path), subprocess.DEVNULL, _env(LC_ALL=latin1))
    try:
        deadline = time.monotonic() + DEADLINE_S
        # The panels are drawn piece by piece: their ASCII frame may follow the "no run" line.
        assert console.read_until(rb"no run", deadline), console.output[-2000:]
        assert console.read_until(rb"\+--", deadline), console.output[-2000:]
        assert b"\\u25" not in console.output
        assert not re.search(rb"[\x80-\xff]{2}", console.output)  # no UTF-8 sent to Latin-1
        os.write(console.master, b"q")
        console.read_until(rb"\x1b\[\?1049l", deadline)
        assert console.proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0
    finally:
        console.close()
