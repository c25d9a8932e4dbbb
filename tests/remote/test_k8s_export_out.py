"""``corral export k8s --out DIR``: one file per object, written into a new folder that
replaces ``DIR`` whole; every failure is one line and leaves ``DIR`` as it was (issue 59: a
failed or re-formatted rewrite left a mix of two exports)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.remote.test_k8s_export import THREE_IN_TWO, export_cli


def test_out_writes_one_file_per_object_and_dry_run_writes_none(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "manifests"
    code, out, err = export_cli(tmp_path, THREE_IN_TWO, capsys, "--out", str(out_dir),
                                "--dry-run")
    assert code == 0 and not out_dir.exists()
    assert out.startswith("---\napiVersion: v1\nkind: ConfigMap")
    assert "kubectl apply -f" in err and "cp corral-copy:/runs/" in err
    code, out, _ = export_cli(tmp_path, THREE_IN_TWO, capsys, "--out", str(out_dir))
    assert code == 0
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "01-configmap-k8s-code.yaml", "02-persistentvolumeclaim-corral-runs.yaml",
        "03-pytorchjob-k8s.yaml"]
    assert f"kubectl apply -f {out_dir}" in out


def one_line_error(code: int, out: str, err: str) -> str:
    """The message of a refused ``export``: exit 2, nothing on stdout, no traceback."""
    assert code == 2 and out == "" and "Traceback" not in err, err
    message = " ".join(err.split())  # rich wraps long lines at the terminal width
    assert message.startswith("corral: cannot export to Kubernetes"), err
    return message


def test_out_on_an_existing_file_is_one_line_and_leaves_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "manifests.yaml"
    taken.write_text("mine\n", encoding="utf-8")
    message = one_line_error(*export_cli(tmp_path, THREE_IN_TWO, capsys, "--out", str(taken)))
    assert f"--out {taken} is a file" in message and "give a folder" in message
    assert taken.read_text(encoding="utf-8") == "mine\n"


def test_out_in_a_folder_that_cannot_be_made_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Below a regular file no folder can be made, even as root (the tests run as root here,
    # where a chmod-ed read-only folder is still writable: that case has its own test below).
    blocker = tmp_path / "plain-file"
    blocker.write_text("", encoding="utf-8")
    out_dir = blocker / "manifests"
    message = one_line_error(*export_cli(tmp_path, THREE_IN_TWO, capsys, "--out", str(out_dir)))
    assert f"cannot write into --out {out_dir}" in message
    assert "give a folder you can write to" in message


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into a read-only folder; the folder-below-a-file test "
                    "covers the same error line")
def test_out_in_a_read_only_folder_is_one_line_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        message = one_line_error(*export_cli(tmp_path, THREE_IN_TWO, capsys,
                                             "--out", str(read_only)))
        assert f"cannot write into --out {read_only}" in message
        assert list(read_only.iterdir()) == []
    finally:
        read_only.chmod(0o700)


def _failing_fsync(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """The ``at``-th file synced fails as on a full disk."""
    synced = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        if len(synced) == at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def test_a_write_failing_half_way_leaves_no_folder_and_nothing_beside_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    out_dir = tmp_path / "manifests"
    _failing_fsync(monkeypatch, at=3)  # two files written, the third fails
    message = one_line_error(*export_cli(tmp_path, THREE_IN_TWO, capsys, "--out", str(out_dir)))
    assert f"cannot write into --out {out_dir} (no space left on device)" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.toml"]


@pytest.mark.parametrize("fails", ["a file", "the swap"])
def test_a_failed_rewrite_keeps_the_previous_export_whole(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, fails: str) -> None:
    """Issue 59: a failed rewrite left a mix of two exports (a job from one, code from the
    other)."""
    out_dir = tmp_path / "manifests"
    code, _, _ = export_cli(tmp_path, THREE_IN_TWO, capsys, "--out", str(out_dir))
    assert code == 0
    before = _files(out_dir)
    if fails == "a file":
        _failing_fsync(monkeypatch, at=len(before))  # the last file of the new export
    else:  # the new folder cannot take the old one's place
        real = os.rename

        def rename(src: object, dst: object) -> None:
            if ".new-" in str(src):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real(src, dst)  # type: ignore[arg-type]
        monkeypatch.setattr(os, "rename", rename)
    message = one_line_error(*export_cli(tmp_path, THREE_IN_TWO, capsys, "--format", "jobset",
                                         "--out", str(out_dir)))
    assert f"cannot write into --out {out_dir}" in message
    assert _files(out_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.toml", "manifests"]


def test_a_rewrite_replaces_the_whole_export(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "manifests"
    assert export_cli(tmp_path, THREE_IN_TWO, capsys, "--out", str(out_dir))[0] == 0
    assert "03-pytorchjob-k8s.yaml" in _files(out_dir)
    # Another format: its job replaces the old one, which is not left beside it to be applied.
    assert export_cli(tmp_path, THREE_IN_TWO, capsys, "--format", "jobset",
                      "--out", str(out_dir))[0] == 0
    assert sorted(_files(out_dir)) == ["01-configmap-k8s-code.yaml",
                                       "02-persistentvolumeclaim-corral-runs.yaml",
                                       "03-jobset-k8s.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.toml", "manifests"]


def test_a_folder_holding_other_files_is_refused_untouched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "k8s"
    out_dir.mkdir()
    (out_dir / "kustomization.yaml").write_text("mine\n", encoding="utf-8")
    (out_dir / "03-pytorchjob-k8s.yaml").mkdir()  # an export's name, but a folder
    message = one_line_error(*export_cli(tmp_path, THREE_IN_TWO, capsys, "--out", str(out_dir)))
    assert f"--out {out_dir} holds 03-pytorchjob-k8s.yaml/, kustomization.yaml" in message
    assert "give a new or empty folder" in message
    assert (out_dir / "kustomization.yaml").read_text(encoding="utf-8") == "mine\n"
    assert sorted(p.name for p in out_dir.iterdir()) == ["03-pytorchjob-k8s.yaml",
                                                        "kustomization.yaml"]
