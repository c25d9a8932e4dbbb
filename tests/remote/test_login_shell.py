"""What corral sends to sshd runs the same under every login shell, and only framed output is
read (``remote.hosts.login_shell``); a probe that did not report is never ``ok``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from remote.checks.host_facts import HostFacts
from remote.checks.leftover_runs import judge_leftovers
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection
from remote.hosts.login_shell import (
    FRAME,
    SHELL_QUESTION,
    first_line,
    framed,
    is_frame,
    shell_answer,
    unframed,
)

NASTY = ("printf '%s\\n' \"a'b\\\\c\" '$HOME' 'x\"y' `echo q` $(echo r); "
         "echo 'two\nlines'; printf 'tab\\there\\n'; echo err >&2; exit 3")
"""Quotes of both kinds, backslashes (fish reads ``\\\\`` in single quotes as one), ``$``,
command substitutions, a newline and a tab inside quotes, stderr and an exit status."""


@pytest.mark.parametrize("shell", ["bash", "dash", "zsh", "fish"])
def test_every_login_shell_runs_the_command_as_sh_would(shell: str) -> None:
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed (scripts/system_packages.sh installs it)")
    expected = subprocess.run(["sh", "-c", NASTY], capture_output=True)
    # As sshd runs it: the login shell's -c, after a start-up file printed a banner.
    got = subprocess.run([path, "-c", f"echo Welcome; {framed(NASTY)}"], capture_output=True)
    out, before = unframed(got.stdout)
    assert (got.returncode, out, unframed(got.stderr)[0]) == (
        3, expected.stdout, expected.stderr)
    assert before == b"Welcome\n"


def test_only_what_follows_the_frame_is_read() -> None:
    frame = FRAME.encode() + b"\n"
    assert unframed(frame + b'{"a": 1}\n') == (b'{"a": 1}\n', b"")
    assert unframed(b"notice\n" + frame + b"x\n") == (b"x\n", b"notice\n")
    # A start-up file that printed without a newline (an xterm title): the frame follows it.
    assert unframed(b"\x1b]0;node-7\x07" + frame + b"x\n") == (b"x\n", b"\x1b]0;node-7\x07")
    assert is_frame("\x1b]0;node-7\x07" + FRAME) and is_frame(FRAME)
    assert unframed(b"fish: Unknown command\n") == (b"fish: Unknown command\n", None)
    assert unframed(b"echo " + frame[:-1] + b"; echo x\n")[1] is None  # the command echoed


@pytest.mark.parametrize("shell", ["bash", "dash", "zsh", "fish"])
def test_a_start_up_file_printing_without_a_newline_is_set_aside(shell: str) -> None:
    path = shutil.which(shell)
    if path is None:
        pytest.skip(f"{shell} is not installed (scripts/system_packages.sh installs it)")
    title = "printf '\\033]0;node-7\\007'"  # an xterm title, as many ~/.bashrc set
    got = subprocess.run([path, "-c", f"{title}; {framed('echo hi')}"], capture_output=True)
    assert unframed(got.stdout) == (b"hi\n", b"\x1b]0;node-7\x07"), got
    marked = subprocess.run([path, "-c", f"{title}; {SHELL_QUESTION}"], capture_output=True,
                            env={"SHELL": path, "PATH": "/usr/bin:/bin"})
    assert shell_answer(marked.stdout.decode()) == path, marked  # not the title's text
    assert shell_answer("fish: Unknown command\n") == ""


def test_a_banner_is_shown_without_its_control_codes() -> None:
    assert first_line(b"\x1b]0;node-7\x07Welcome to node-7\n") == "Welcome to node-7"
    assert first_line("\x1b[33mquota: 81% used\x1b[0m\n") == "quota: 81% used"


def test_leftovers_not_looked_at_are_not_ok(tmp_path: Path) -> None:
    host = HostSection(name="h1", address="127.0.0.1", gpus=0)
    config = ClusterConfig(path=tmp_path / "cluster.toml", hosts=(host,),
                           cluster=ClusterSection(name="t", run_root=str(tmp_path)))
    facts = HostFacts()
    judge_leftovers(host, config, "/home/u", None, facts)
    assert [(i.name, i.ok) for i in facts.items] == [("leftovers", False)]
    assert "could not list" in facts.items[0].detail
    facts = HostFacts()
    judge_leftovers(host, config, "/home/u", "", facts)
    assert [(i.name, i.ok, i.detail) for i in facts.items] == [("leftovers", True, "none")]
