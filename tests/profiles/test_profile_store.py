"""Profiles on disk: round trip, atomic writes, and no silent use of a wrong profile."""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from profiles.profile import Profile
from profiles.store import (
    ProfileKey,
    ProfileStoreError,
    default_root,
    find_profile,
    load_profile,
    profile_path,
    save_profile,
)


def make_profile(**changes: object) -> Profile:
    values: dict[str, object] = {
        "host": "gpu-box", "device": "cuda:0", "device_name": 'NVIDIA "H100" \\ 80GB',
        "model": "resnet18", "torch_version": "2.13.0+cu128", "threads": 4, "slowdown": 1.0,
        "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "batches": (8, 16, 32), "step_s": (0.02, 0.03, 0.05), "a": 0.01, "c": 0.00125,
        "max_batch": 512,
    }
    values.update(changes)
    return Profile(**values)  # type: ignore[arg-type]


def lookup(profile: Profile, root: Path | None, *, precision: str | None = None,
           unlabelled_ok: bool = True, max_age_days: float = 30.0,
           **changes: Any) -> tuple[Profile | None, str]:
    """``find_profile`` for ``profile``'s key with ``changes`` to its fields."""
    key = dataclasses.replace(ProfileKey.of(profile), **changes)
    return find_profile(key, root=root, precision=precision, unlabelled_ok=unlabelled_ok,
                        max_age_days=max_age_days)


def test_samples_per_s_follows_the_fit() -> None:
    profile = make_profile(a=0.01, c=0.001)
    assert profile.samples_per_s(10) == pytest.approx(10 / 0.02)
    assert profile.samples_per_s(1000) == pytest.approx(1000 / 1.01)
    with pytest.raises(ValueError):
        profile.samples_per_s(0)


def test_round_trip(tmp_path: Path) -> None:
    profile = make_profile()
    path = save_profile(profile, root=tmp_path)
    assert path.is_relative_to(tmp_path) and load_profile(path) == profile
    found, reason = lookup(profile, tmp_path)
    assert found == profile and str(path) in reason


def test_round_trip_without_max_batch_and_odd_floats(tmp_path: Path) -> None:
    profile = make_profile(max_batch=None, a=0.0, c=1e-07, slowdown=2.5,
                           step_s=(1e-05, 3.3333333333333335e-06, 123456789.125))
    assert load_profile(save_profile(profile, root=tmp_path)) == profile


def test_missing_profile_says_how_to_make_one(tmp_path: Path) -> None:
    found, reason = lookup(make_profile(), tmp_path)
    assert found is None
    assert "no profile" in reason and "python -m trainer.profile_model --model resnet18" in reason


@pytest.mark.parametrize(
    ("change", "mentioned"),
    [({"torch_version": "2.14.0"}, "torch 2.13.0+cu128"), ({"threads": 1}, "4 threads"),
     ({"slowdown": 3.0}, "slowdown 1")],
)
def test_other_conditions_are_not_used(tmp_path: Path, change: dict[str, Any],
                                       mentioned: str) -> None:
    profile = make_profile()
    save_profile(profile, root=tmp_path)
    found, reason = lookup(profile, tmp_path, **change)
    assert found is None
    assert mentioned in reason  # says what the stored profile was made with


def test_each_condition_has_its_own_profile(tmp_path: Path) -> None:
    slow = make_profile(slowdown=3.0, a=0.03, c=0.00375)
    fast = make_profile()
    save_profile(slow, root=tmp_path)
    save_profile(fast, root=tmp_path)
    assert lookup(fast, tmp_path, slowdown=3.0)[0] == slow
    assert lookup(fast, tmp_path)[0] == fast


def test_stale_profile_is_rejected(tmp_path: Path) -> None:
    old = (datetime.now(timezone.utc) - timedelta(days=40)).isoformat()
    profile = make_profile(created=old)
    save_profile(profile, root=tmp_path)
    found, reason = lookup(profile, tmp_path)
    assert found is None and "stale" in reason and "40 days" in reason
    assert lookup(profile, tmp_path, max_age_days=60)[0] == profile


def test_file_that_disagrees_with_its_name_is_rejected(tmp_path: Path) -> None:
    profile = make_profile()
    path = save_profile(profile, root=tmp_path)
    edited = path.read_text().replace('threads = 4', 'threads = 8')
    path.write_text(edited)
    found, reason = lookup(profile, tmp_path)
    assert found is None and "threads 8 (need 4)" in reason


@pytest.mark.parametrize("text", ["", "not = [toml", "format = 99\n", "format = 1\nhost = 'x'\n"])
def test_unreadable_profile_is_rejected_with_a_reason(tmp_path: Path, text: str) -> None:
    profile = make_profile()
    path = save_profile(profile, root=tmp_path)
    path.write_text(text)
    found, reason = lookup(profile, tmp_path)
    assert found is None and "unreadable" in reason


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = make_profile()
    path = save_profile(first, root=tmp_path)
    before = path.read_bytes()

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(ProfileStoreError, match="No space left"):
        save_profile(dataclasses.replace(first, a=0.5), root=tmp_path)
    assert path.read_bytes() == before  # the old profile is intact
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left


def test_unwritable_store_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ProfileStoreError, match="CORRAL_PROFILE_DIR"):
        save_profile(make_profile(), root=blocker)


def test_store_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CORRAL_PROFILE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_root() == tmp_path / "cache" / "corral" / "profiles"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_root() == Path.home() / ".cache" / "corral" / "profiles"
    monkeypatch.setenv("CORRAL_PROFILE_DIR", str(tmp_path / "mine"))
    profile = make_profile()
    assert save_profile(profile).is_relative_to(tmp_path / "mine")
    assert lookup(profile, None)[0] == profile


def test_path_is_keyed_by_host_device_model_and_torch(tmp_path: Path) -> None:
    key = ProfileKey(host="h", device_name="GPU A", model="m", torch_version="2.13.0",
                     threads=1, slowdown=1.0)
    paths = {profile_path(key, root=tmp_path)}
    for other in [dataclasses.replace(key, host="h2"),
                  dataclasses.replace(key, device_name="GPU B"),
                  dataclasses.replace(key, model="m2"),
                  dataclasses.replace(key, torch_version="2.12.0")]:
        paths.add(profile_path(other, root=tmp_path))
    assert len(paths) == 5
    # ... and by precision: one measured in fp32 is not one measured in bf16 or unlabelled
    labelled = {profile_path(key, root=tmp_path, precision=p) for p in ("fp32", "bf16")}
    assert len(labelled | paths) == 7


def test_a_profile_is_found_by_the_precision_it_was_measured_in(tmp_path: Path) -> None:
    bf16 = make_profile(precision="bf16", a=0.005)
    save_profile(bf16, root=tmp_path)
    assert lookup(bf16, tmp_path, precision="bf16")[0] == bf16
    found, reason = lookup(bf16, tmp_path, precision="fp32")
    assert found is None
    assert "--model resnet18 --precision fp32 --save` on gpu-box" in reason


def test_an_unlabelled_profile_is_not_used_for_a_gpu_fp32_run_without_saying_so(
        tmp_path: Path) -> None:
    # Made before profiles recorded a precision: torch's default let cuDNN use TF32, so its
    # speeds are too high for an IEEE fp32 run on a GPU.
    old = make_profile()
    path = save_profile(old, root=tmp_path)
    found, reason = lookup(old, tmp_path, precision="fp32", unlabelled_ok=False)
    assert found is None
    assert reason == (f"profile {path} records no precision (made with torch's default TF32 "
                      "convolutions), not used for this fp32 run; run `python -m "
                      "trainer.profile_model --model resnet18 --precision fp32 --save` on "
                      "gpu-box")
    # Where the caller judges it the same arithmetic (fp32 on a CPU), it is used, and said.
    found, reason = lookup(old, tmp_path, precision="fp32", unlabelled_ok=True)
    assert found == old
    assert "made before profiles recorded a precision: taken as fp32" in reason


@pytest.mark.parametrize(
    "change",
    [{"a": -0.1}, {"c": -1.0}, {"a": 0.0, "c": 0.0}, {"batches": (8,)}, {"threads": 0},
     {"slowdown": 0.5}, {"created": "yesterday"}, {"max_batch": 0}],
)
def test_invalid_profiles_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_profile(**change)
