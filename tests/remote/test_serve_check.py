"""``corral check`` names textual-serve when it is missing, as information: the browser view
needs it, a run does not."""

from __future__ import annotations

import importlib.util

import pytest

from remote.checks.trackers import serve_items


def test_missing_textual_serve_is_named_but_fails_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert serve_items() == []  # installed here (the dev environment has the serve extra)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "textual_serve" else real(name, *rest))
    [item] = serve_items()
    assert item.ok and "textual-serve" in item.detail and "corral[serve]" in item.detail
