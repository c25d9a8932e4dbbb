"""The two test tiers: the fast one (``scripts/test.sh --fast``) and the slow one.

The slow tier is every test marked ``slow``. Tests that need a real sshd or a network namespace
join it here, without a marker of their own: a test in a ``*_sshd.py`` or ``*netns*.py`` file,
or one using the ``sshd_cluster`` or ``box`` fixture, is marked ``sshd``/``netns`` and ``slow``;
so is every ``gpu`` test. Tests that start torchrun (several ranks) or load a large model carry
``slow`` explicitly in their module.

A fast test that tries to start torchrun, sshd or a namespace fails, naming the command: it
belongs to the slow tier, so the fast tier stays fast by construction, not by review.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SSHD_FIXTURES = {"sshd_cluster"}
NETNS_FIXTURES = {"box"}


def _tier_markers(item: pytest.Item) -> list[str]:
    """The markers ``item`` gets from where it lives and what it uses."""
    name = Path(str(item.fspath)).name
    fixtures = set(getattr(item, "fixturenames", ()))
    markers = []
    if name.endswith("_sshd.py") or fixtures & SSHD_FIXTURES:
        markers.append("sshd")
    if "netns" in name or fixtures & NETNS_FIXTURES:
        markers += ["netns", "sshd"]
    if markers or item.get_closest_marker("gpu") is not None:
        markers.append("slow")
    return markers


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker in _tier_markers(item):
            if item.get_closest_marker(marker) is None:
                item.add_marker(marker)


def _runs_torchrun(words: list[str]) -> bool:
    """A Python interpreter (not a stand-in that records its arguments) told to run torchrun."""
    return any(word == "-m" and nxt == "torch.distributed.run"
               and Path(interpreter).name.startswith("python")
               for interpreter, word, nxt in zip(words, words[1:], words[2:], strict=False))


def slow_tier_command(args: Any) -> str | None:
    """What in a command line belongs to the slow tier (torchrun, sshd, namespaces), if any."""
    words = [str(a) for a in args] if isinstance(args, (list, tuple)) else [str(args)]
    first = Path(words[0]).name if words else ""
    if first in ("torchrun", "sshd", "unshare"):
        return first
    if first == "ip" and "netns" in words[1:3]:
        return "ip netns"
    if first == "sh" and "-c" in words:  # a local host's script: look inside it
        with contextlib.suppress(ValueError):
            words = shlex.split(words[words.index("-c") + 1].replace(";", " ; "))
    return "torchrun" if _runs_torchrun(words) else None


@pytest.fixture(autouse=True)
def fast_tier_starts_no_slow_process(request: pytest.FixtureRequest,
                                     monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In a test outside the slow tier, starting torchrun/sshd/a namespace is an error."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    started = subprocess.Popen.__init__

    def guarded(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        what = slow_tier_command(args)
        if what is not None:
            pytest.fail(f"a fast-tier test started {what}; mark it slow "
                        f"(pytest.mark.slow) or avoid the process: {args!r}"[:400])
        started(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
    yield
