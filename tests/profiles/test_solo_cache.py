"""A device's solo figure: its stored profile when it has one, else a probe timed once and read
back from the cache on every later run under the same key, precision and batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiles.profile import Profile
from profiles.solo import probe_path, solo_rate
from profiles.store import ProfileKey

KEY = ProfileKey(host="box", device_name="Some CPU", model="resnet18", torch_version="2.5.1",
                 threads=4, slowdown=1.0)


class FakeProbe:
    """Counts its calls; answers ``rate`` samples/s."""

    def __init__(self, rate: float) -> None:
        self.rate, self.calls = rate, 0

    def __call__(self) -> float:
        self.calls += 1
        return self.rate


def _profile() -> Profile:
    return Profile(host="box", device="cpu", device_name="Some CPU", model="resnet18",
                   torch_version="2.5.1", threads=4, slowdown=1.0,
                   created="2026-11-21T04:30:00Z", batches=(8, 32), step_s=(0.1, 0.4),
                   a=0.0, c=0.0125, precision="fp32")


def test_a_probe_is_timed_once_then_read_back_from_the_cache(tmp_path: Path) -> None:
    probe = FakeProbe(250.0)
    first = solo_rate(KEY, precision="fp32", batch=32, probe=probe, root=tmp_path)
    again = solo_rate(KEY, precision="fp32", batch=32, probe=probe, root=tmp_path)
    assert (first.samples_per_s, first.source, first.cached) == (250.0, "probe", False)
    assert (again.samples_per_s, again.source, again.cached) == (250.0, "probe", True)
    assert probe.calls == 1  # the second run measured nothing
    assert probe_path(KEY, precision="fp32", batch=32, root=tmp_path).is_file()


@pytest.mark.parametrize("change", [{"precision": "bf16"}, {"batch": 64}])
def test_another_precision_or_batch_is_probed_anew(tmp_path: Path,
                                                   change: dict[str, object]) -> None:
    probe = FakeProbe(250.0)
    solo_rate(KEY, precision="fp32", batch=32, probe=probe, root=tmp_path)
    asked: dict[str, object] = {"precision": "fp32", "batch": 32, **change}
    other = solo_rate(KEY, probe=probe, root=tmp_path, **asked)  # type: ignore[arg-type]
    assert other.cached is False and probe.calls == 2


def test_a_stored_profile_is_used_and_nothing_is_measured(tmp_path: Path) -> None:
    probe = FakeProbe(1.0)
    solo = solo_rate(KEY, precision="fp32", batch=32, probe=probe, profile=_profile(),
                     root=tmp_path)
    assert solo.source == "profile" and solo.samples_per_s == pytest.approx(80.0)
    assert probe.calls == 0


@pytest.mark.parametrize("rate", [0.0, float("nan"), float("inf"), -3.0])
def test_a_probe_without_a_rate_is_unknown_and_not_kept(tmp_path: Path, rate: float) -> None:
    solo = solo_rate(KEY, precision="fp32", batch=32, probe=FakeProbe(rate), root=tmp_path)
    assert (solo.samples_per_s, solo.source) == (None, "unknown")
    assert not probe_path(KEY, precision="fp32", batch=32, root=tmp_path).exists()


def test_a_cache_that_cannot_be_written_still_gives_the_figure(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    solo = solo_rate(KEY, precision="fp32", batch=32, probe=FakeProbe(90.0), root=blocked)
    assert (solo.samples_per_s, solo.source) == (90.0, "probe")


def test_a_torn_cache_file_is_probed_again(tmp_path: Path) -> None:
    path = probe_path(KEY, precision="fp32", batch=32, root=tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"samples_per_s": ')
    probe = FakeProbe(70.0)
    assert solo_rate(KEY, precision="fp32", batch=32, probe=probe, root=tmp_path).cached is False
    assert probe.calls == 1


def test_a_stale_cached_probe_is_measured_again(tmp_path: Path) -> None:
    path = probe_path(KEY, precision="fp32", batch=32, root=tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"samples_per_s": 40.0, "created": "2020-01-01T00:00:00Z"}')
    probe = FakeProbe(70.0)
    solo = solo_rate(KEY, precision="fp32", batch=32, probe=probe, root=tmp_path)
    assert (solo.samples_per_s, solo.cached, probe.calls) == (70.0, False, 1)


def test_an_emulating_runs_probe_is_kept_apart_from_the_wall_clocks(tmp_path: Path) -> None:
    """A run that emulates slower devices times a rank's own work, not the wall clock: its
    probe is not what a plain run on the same device measures."""
    probe = FakeProbe(300.0)
    solo_rate(KEY, precision="fp32", batch=32, probe=probe, root=tmp_path, emulated=True)
    plain = solo_rate(KEY, precision="fp32", batch=32, probe=FakeProbe(90.0), root=tmp_path)
    again = solo_rate(KEY, precision="fp32", batch=32, probe=probe, root=tmp_path, emulated=True)
    assert (plain.samples_per_s, plain.cached) == (90.0, False)
    assert (again.samples_per_s, again.cached, probe.calls) == (300.0, True, 1)
