"""``corral fetch`` of a script's run, from ``local`` hosts (this machine, through the same
command channel an SSH host gets; tests/remote/scenarios/test_fetch_sshd.py does it over sshd):
rank 0's
working directory, or named paths in it, or every host's, verified; a PATH never reaches out
of the run's directory, neither by ``..`` nor through a link."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import console.cli as cli
from remote.records.runs import RunInfo
from trainer.events import StartEvent

try:
    from recorded import write_recorded
except ImportError:  # collected as a package
    from tests.remote.recorded import write_recorded  # type: ignore[no-redef]

RUN = "out-20260101-000000-abcdef"
ODD = "my out/it's $HOME.txt"
"""A name the shell would split, quote and expand if it were not quoted."""


def _start(rank: int, task: str) -> StartEvent:
    return StartEvent(t=1.0, rank=rank, world_size=2, local_rank=0, host="h", pid=1,
                      device="cpu", device_name="cpu", backend="gloo", model="train.py",
                      dataset="", global_batch=0, split=(), policy="", step=0, total_steps=0,
                      steps_per_epoch=0, threads=1, slowdown=1.0, task=task)


def _script_run(root: Path, task: str = "script") -> tuple[Path, Path]:
    """cluster.toml of two local hosts, and the recorded run (of ``task``) whose working
    directories hold what its script wrote (and a link out of the run, to a file that must
    stay here)."""
    (root / "train.py").write_text("print('hi')\n")
    path = root / "cluster.toml"
    path.write_text(f'[cluster]\nname = "out"\nrun_root = "{root / "runs"}"\n'
                    '[[hosts]]\nname = "fast"\naddress = "local"\n'
                    '[[hosts]]\nname = "slow"\naddress = "local"\n'
                    '[run]\nscript = "train.py"\n', encoding="utf-8")
    run_dir = root / "runs" / RUN
    write_recorded(run_dir, RunInfo(run_id=RUN, cluster="out", state="stopped", started=0.0,
                                    hosts=("fast", "slow")),
                   [("fast", _start(0, task)), ("slow", _start(1, task))])
    (root / "secret").mkdir()
    (root / "secret" / "key").write_text("not the run's")
    for host in ("fast", "slow"):
        cwd = run_dir / "cwd" / host
        (cwd / "my out").mkdir(parents=True)
        (cwd / "snapshot.pt").write_bytes(host.encode() * 1000)
        (cwd / ODD).write_text("quoted")
        (cwd / "leak").symlink_to(root / "secret" / "key")
        (cwd / "leaks").symlink_to(root / "secret")
    return path, run_dir


def _fetch(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, str]:
    code = cli.main(["-c", str(path), "fetch", RUN, *args])
    out = capsys.readouterr()
    return code, " ".join((out.out + out.err).split())


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_a_script_runs_working_directory_comes_back_without_what_links_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, run_dir = _script_run(tmp_path)
    code, out = _fetch(capsys, path)
    assert code == 0, out
    fetched = run_dir / "fetched" / "fast"
    assert _files(fetched) == {"snapshot.pt", ODD}  # rank 0's host only; no link out
    assert hashlib.sha256((fetched / "snapshot.pt").read_bytes()).digest() == hashlib.sha256(
        b"fast" * 1000).digest()
    assert "sha256 verified" in out and "left out" in out and "from fast" in out
    assert not (run_dir / "fetched" / "slow").exists()
    code, out = _fetch(capsys, path, "--all-hosts", "snapshot.pt")  # a PATH after an option
    assert code == 0, out
    assert (run_dir / "fetched" / "slow" / "snapshot.pt").read_bytes() == b"slow" * 1000


def test_named_paths_come_back_quoted_and_none_leaves_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, run_dir = _script_run(tmp_path)
    code, out = _fetch(capsys, path, ODD, "snapshot.pt")
    assert code == 0, out
    assert _files(run_dir / "fetched" / "fast") == {"snapshot.pt", ODD}
    assert (run_dir / "fetched" / "fast" / ODD).read_text() == "quoted"
    for outside in ("../../../secret/key", "/etc/passwd", "~/key", "leak", "leaks/key", ""):
        code, out = _fetch(capsys, path, outside)
        assert code != 0 and "Traceback" not in out, (outside, out)
        assert "relative to its working directory" in out or "out of the run" in out, out
    assert not list((run_dir / "fetched").rglob("key*"))  # nothing of it was copied
    code, out = _fetch(capsys, path, "nope.pt")
    assert code != 0 and "the script wrote no nope.pt" in out, out


def test_a_script_runs_checkpoint_and_final_say_how_to_fetch_its_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _script_run(tmp_path)
    code, out = _fetch(capsys, path, "--checkpoint")
    assert code != 0 and "try --final" not in out and f"corral fetch {RUN} PATH" in out, out
    code, out = _fetch(capsys, path, "--final")
    assert code != 0 and "scp" not in out and f"`corral fetch {RUN}` brings it" in out, out
    code, out = _fetch(capsys, path, "--final", "snapshot.pt")
    assert code == 2 and "leave out --final" in out, out



def test_paths_of_a_run_of_corrals_own_task_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _script_run(tmp_path, task="image")
    code, out = _fetch(capsys, path, "snapshot.pt")
    assert code == 2 and "ran corral's own task" in out, out


def test_fetch_without_a_run_names_the_run_alone_as_missing(
        capsys: pytest.CaptureFixture[str]) -> None:
    """argparse took PATH for required too ("required: RUN, PATH"): PATH is optional."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["fetch"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.rstrip().endswith("required: RUN"), err
