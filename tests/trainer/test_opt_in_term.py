"""A script with corral's opt-in (the DDP helper, the HF opt-in) stopped by TERM (``corral
stop``): its rank's end is written, ``interrupted``, through the opt-in's events. The opt-in
writes its own end at exit, which the signal's default action skips: on the old code such a
rank ended with no end event, and the run's record showed it as still stepping."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from trainer.integrations.plain_events import PlainEvents
from trainer.integrations.run import ScriptRun


def test_a_term_writes_the_opt_ins_interrupted_end(monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[tuple[str, str | None]] = []
    opt_in = SimpleNamespace(end=lambda status, error=None: ended.append((status, error)))
    monkeypatch.setattr(ScriptRun, "made", True)
    monkeypatch.setattr(ScriptRun, "newest", opt_in)
    events = object.__new__(PlainEvents)  # its hooks and handler are not the point here
    events._ended = False
    monkeypatch.setattr(events, "_remove_hooks", lambda: None, raising=False)
    events.end("stopped by SIGTERM", status="interrupted")  # what its TERM handler writes
    events.end("stopped by SIGTERM", status="interrupted")  # once
    assert ended == [("interrupted", "stopped by SIGTERM")]


def test_a_failed_or_completed_script_leaves_its_end_to_the_opt_in(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[tuple[str, str | None]] = []
    opt_in = SimpleNamespace(end=lambda status, error=None: ended.append((status, error)))
    monkeypatch.setattr(ScriptRun, "made", True)
    monkeypatch.setattr(ScriptRun, "newest", opt_in)
    for error in (None, "exited with status 1"):
        events = object.__new__(PlainEvents)
        events._ended = False
        monkeypatch.setattr(events, "_remove_hooks", lambda: None, raising=False)
        events.end(error)
    assert ended == []  # its exit handler writes it (``ddp.Shares._finish``, ``hf``)


def test_the_opt_in_taking_over_the_events_keeps_the_term_handler(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On the old code the plain events' hooks went at the opt-in's first step, their TERM
    handler with them: ``corral stop`` then killed the rank before any end was written."""
    monkeypatch.setattr(ScriptRun, "made", True)
    events = object.__new__(PlainEvents)
    events._timer, events._hooks, events._model_hook, events._resources = None, [], None, None
    events._on_term, events._theirs = events._term, signal.SIG_DFL
    before = signal.signal(signal.SIGTERM, events._on_term)
    try:
        events._stepped(None, None, None)  # the opt-in's first optimizer step
        assert signal.getsignal(signal.SIGTERM) == events._on_term
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_live_joiner_stopped_writes_the_opt_ins_interrupted_end(tmp_path: Path) -> None:
    """A joiner writes no plain events (``script_main``), so it had no TERM handler: a joiner
    let in and then stopped ended with its last step as its last event."""
    ended = tmp_path / "ended"
    child = textwrap.dedent(f"""
        import sys, types
        from trainer.integrations.plain_events import joiner_term
        from trainer.integrations.run import ScriptRun
        def end(status, error=None):
            open({str(ended)!r}, "w").write(status + " " + error)
        ScriptRun.newest = types.SimpleNamespace(end=end)
        joiner_term()
        print("ready", flush=True)
        sys.stdin.read()
        """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM  # ended of the signal, as by default
    assert ended.read_text() == "interrupted stopped by SIGTERM"
