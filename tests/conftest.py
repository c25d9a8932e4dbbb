"""The test tiers (``tiers.py``): slow-tier markers from files and fixtures, the modules with
the most slow tests run first, and a guard that fails a fast-tier test starting torchrun, sshd
or a network namespace; the suite's launches counted against their budget (``launch_count.py``).
Collection runs with the cyclic garbage collector paused."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import launch_count
import pytest
import tiers
from hypothesis import settings
from tiers import heaviest_first, misplaced, slow_tier_command, tier_markers

from trainer.gc_pause import collector_paused

# Property tests judge results, never speed: hypothesis's default 200 ms deadline per example
# fails them on a loaded machine (the suite runs three workers on two cores).
settings.register_profile("corral", deadline=None)
settings.load_profile("corral")


@pytest.hookimpl(hookwrapper=True)
def pytest_collection() -> Iterator[None]:
    """Collect with the cyclic collector paused, as corral's processes import: the test modules
    import torch, transformers and the rest here (trainer.gc_pause)."""
    with collector_paused():
        yield


def pytest_configure(config: pytest.Config) -> None:
    launch_count.install()
    config.stash[_FROM_WORKERS] = 0


_FROM_WORKERS = pytest.StashKey[int]()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """An xdist worker's launches, added to the controller's count."""
    node.config.stash[_FROM_WORKERS] += node.workeroutput.get("launches", 0)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker hands its count to the controller; the controller (or a run without workers)
    judges the total against the budget, failing the run above it."""
    own = sum(launch_count.launches.values())
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["launches"] = own
        return
    total, line = launch_count.judged(own + session.config.stash[_FROM_WORKERS],
                                      launch_count.tally_path())
    if total > launch_count.LAUNCH_BUDGET:
        line += (": over it. Fold the new runs into a scenario already launched (a module-scoped"
                 " run serving every check about it), docs/testing.md \"Launches\"")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    session.config.stash[_LINE] = line


_LINE = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if _LINE in config.stash:
        terminalreporter.write_line(f"corral: {config.stash[_LINE]}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        markers = tier_markers(str(item.fspath), getattr(item, "fixturenames", ()),
                               gpu=item.get_closest_marker("gpu") is not None,
                               serial=item.get_closest_marker("serial") is not None,
                               alone=item.get_closest_marker("alone") is not None)
        for marker in markers:
            if item.get_closest_marker(marker) is None:
                item.add_marker(marker)
    slow = [item.get_closest_marker("slow") is not None for item in items]
    astray = misplaced([(item.nodeid, str(item.fspath), is_slow)
                        for item, is_slow in zip(items, slow, strict=True)])
    if astray:
        raise pytest.UsageError(
            f"{len(astray)} slow-tier test(s) outside a scenarios/ folder; move each to its "
            f"area's scenarios/ (docs/testing.md \"Tiers\"): {', '.join(astray[:5])}")
    order = heaviest_first([str(item.fspath) for item in items], slow)
    items[:] = [items[i] for i in order]


@pytest.fixture(autouse=True)
def fast_tier_starts_no_slow_process(request: pytest.FixtureRequest,
                                     monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In a test outside the slow tier, starting torchrun/sshd/a namespace is an error."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    start = subprocess.Popen.__init__

    def guarded(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        what = slow_tier_command(args)
        if what is not None:
            pytest.fail(f"a fast-tier test started {what}; mark it slow "
                        f"(pytest.mark.slow) or avoid the process: {args!r}"[:400])
        start(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
    monkeypatch.setattr(tiers, "in_fast_test", True)  # no warm spawner: every start is seen
    monkeypatch.setattr(launch_count, "counting", False)
    yield
