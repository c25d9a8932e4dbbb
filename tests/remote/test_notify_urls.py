"""``[notify] urls`` checked by apprise itself before a run starts, and never echoed with a
credential: ``corral check`` fails what ``corral run`` refuses (issue 81, item 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiles.user_errors import UsageError
from remote.checks.notify_urls import masked
from remote.checks.trackers import notify_items
from remote.config.cluster import ClusterConfig
from remote.config.exports import NotifySection
from remote.config.read import load_cluster
from remote.run.notify import NoticeSender, RunNotice

BASE = '[cluster]\nname = "c"\n[[hosts]]\nname = "a"\naddress = "local"\n'


def _config(tmp_path: Path, urls: str) -> ClusterConfig:
    toml = tmp_path / "cluster.toml"
    toml.write_text(BASE + f"[notify]\nurls = {urls}\n")
    return load_cluster(toml)


@pytest.mark.parametrize("url", ["slack://", "json://", "http://[::1", "mailto://"])
def test_a_url_apprise_cannot_read_fails_the_check_and_is_refused_by_the_run(
        tmp_path: Path, url: str) -> None:
    config = _config(tmp_path, f'["ntfy://topic", "{url}"]')
    (item,) = notify_items(config)
    assert not item.ok and "urls[1]" in item.detail and "urls[0]" not in item.detail
    with pytest.raises(UsageError, match=r"urls\[1\].*apprise"):
        NoticeSender(config.notify)


def test_an_unset_secret_fails_the_check_naming_it(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_TEST_TOPIC", raising=False)
    config = _config(tmp_path, '["ntfy://${CORRAL_TEST_TOPIC}"]')
    (item,) = notify_items(config)
    assert not item.ok and "export CORRAL_TEST_TOPIC" in item.detail
    monkeypatch.setenv("CORRAL_TEST_TOPIC", "news")
    (item,) = notify_items(config)
    assert item.ok


def test_credentials_in_a_url_are_never_echoed(tmp_path: Path) -> None:
    url = "json://alice:HUNTER2@127.0.0.1:1/hook/PATHKEY?token=TOKVAL"
    assert masked(url) == "json://***@127.0.0.1:1/***?***"
    (item,) = notify_items(_config(tmp_path, f'["{url}"]'))
    assert item.ok and "127.0.0.1:1" in item.detail
    broken = _config(tmp_path, f'["{url}", "slack://alice:HUNTER2@"]')
    sender = NoticeSender(NotifySection(urls=(url,), timeout_s=30.0))
    sender.send(RunNotice(event="failed", title="t", body="b"))  # port 1: refused at once
    sender.drain()
    said = " ".join([*sender.take_warnings(), item.detail, *(i.detail for i in
                                                             notify_items(broken))])
    assert "was not sent" in said and "127.0.0.1:1" in said
    for secret in ("alice", "HUNTER2", "PATHKEY", "TOKVAL"):
        assert secret not in said
