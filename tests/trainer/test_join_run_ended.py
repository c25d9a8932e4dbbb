"""A joiner launched after the run it joins has ended (`corral join` while the last steps ran:
the joiner's start outlasted them) ends at once, saying so, instead of retrying for two minutes
to reach a store nobody serves and ending on torch's socket timeout."""

from __future__ import annotations

import datetime
import socket

import pytest

from trainer.membership import entry
from trainer.membership.contract import JOIN_ENV, MEMBERSHIP_ADDR_ENV, MEMBERSHIP_PORT_ENV


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_joiner_whose_run_has_ended_is_told_so(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    monkeypatch.setenv(JOIN_ENV, "1")
    monkeypatch.setenv(MEMBERSHIP_ADDR_ENV, "127.0.0.1")
    monkeypatch.setenv(MEMBERSHIP_PORT_ENV, str(port))
    monkeypatch.setattr(entry, "JOIN_CONNECT_TIMEOUT", datetime.timedelta(seconds=1))
    with pytest.raises(entry.RunEnded) as raised:
        entry.open_store(port, serve=False)
    said = str(raised.value)
    assert f"127.0.0.1:{port}" in said and "the run ended" in said and "--resume" in said
    assert raised.value.exit_code == 0  # no failure: its host does not mark the run failed
