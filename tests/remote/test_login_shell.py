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
from remote.hosts.login_shell import FRAME, framed, unframed

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
    # A line that only ends with the frame's text is not the frame.
    assert unframed(b"say " + frame) == (b"say " + frame, None)
    assert unframed(b"fish: Unknown command\n") == (b"fish: Unknown command\n", None)


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
