"""Torchrun parity for files over sshd hosts that do not see the launch folder: shards in a
gitignored folder named neither data nor datasets, a model folder's model.safetensors, a
checkpoints/ the script resumes from and writes again, and an absolute path argument are read
on every host; each, put in .corralignore (or on no other host), fails with an explanation
naming what stayed home and the one change that sends it. The script is a ``src/`` layout's
entry script in ``scripts/`` that puts ``src/`` on ``sys.path``: its own packages travel with it
and each host runs it from its own working directory, as under ``torchrun scripts/train.py``
from the repository's root. One module-scoped table of runs: each run launched once, checked
many ways."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from console.follow import status_line
from remote.api import RunStatus
from remote.config.cluster import RunSection
from trainer.run_layout import RunLayout

try:
    from conftest import sshd_factory
    from runkit import run_processes
    from test_data_travels_sshd import _private
    from test_script_run_local import run_to_end
    from test_script_tree_local import SRC_LAYOUT
except ImportError:  # collected as a package
    from tests.remote.conftest import sshd_factory  # type: ignore[no-redef]
    from tests.remote.runkit import run_processes  # type: ignore[no-redef]
    from tests.remote.scenarios.test_data_travels_sshd import _private  # type: ignore[no-redef]
    from tests.remote.scenarios.test_script_run_local import run_to_end  # type: ignore[no-redef]
    from tests.remote.scenarios.test_script_tree_local import SRC_LAYOUT  # type: ignore[no-redef]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")]

SCRIPT = """\
import glob, os, sys
from pathlib import Path
seen = []
shards = sorted(glob.glob("tokens/*.npy"))
assert len(shards) > 0, "no shards found"          # build-nanogpt's loader asserts so
seen.append(Path(shards[0]).read_bytes())
if not os.path.isfile("model/model.safetensors"):  # transformers' words
    raise OSError("Error no file named model.safetensors found in directory ./model.")
seen.append(Path("model/model.safetensors").read_bytes())
last = Path("checkpoints/last.pt").read_bytes()     # resumed from, then written again
Path("checkpoints/last.pt").write_bytes(last + b"+1")
seen.append(last)
seen.append(Path(sys.argv[1]).read_bytes())         # an absolute path argument
os.makedirs("seen", exist_ok=True)
Path("seen/all").write_bytes(b"|".join(seen))
"""
EXPECTED = b"shard|weights|step-7|vocab"
ENTRY = "scripts/train.py"
"""The run's script: ``SCRIPT``'s reads, then ``SRC_LAYOUT``'s entry script (``src/`` put on
``sys.path`` through ``__file__``, its packages imported, a DDP loop, ``out/seen.json``)."""


@dataclass
class Outcome:
    final: RunStatus
    printed: str
    run_dir: Path
    left: list[str]


@dataclass
class Table:
    repo: Path
    runs: dict[str, Outcome]
    refused: str


def _repo(root: Path) -> Path:
    repo = root / "repo"
    for rel, data in (("tokens/part-0.npy", b"shard"), ("model/model.safetensors", b"weights"),
                      ("model/config.json", b"{}"), ("checkpoints/last.pt", b"step-7")):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(data)
    for rel, text in {**SRC_LAYOUT, ENTRY: SCRIPT + SRC_LAYOUT[ENTRY]}.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    (repo / ".gitignore").write_text("tokens/\n")
    return repo


def _launch_all(root: Path, start: object) -> Table:
    repo = _repo(root)
    shared, private = root / "shared", root / "private"
    for folder, text in ((shared, b"vocab"), (private, b"vocab")):
        folder.mkdir()
        (folder / "vocab.txt").write_bytes(text)
    cluster = start(2, prefix=_private(repo, private))  # type: ignore[operator]
    runs: dict[str, Outcome] = {}
    for name, ignore in (("all", ""), ("tokens", "tokens/\n"), ("model", "*.safetensors\n"),
                         ("resume", "checkpoints/\n")):
        (repo / ".corralignore").write_text(ignore)
        config = cluster.config(run=RunSection(script=str(repo / ENTRY), code=str(repo),
                                               args=(str(shared / "vocab.txt"),)), name=name)
        run_id, events = asyncio.run(run_to_end(config))
        final = events[-1]
        assert isinstance(final, RunStatus), final
        runs[name] = Outcome(final=final, printed=status_line(final),
                             run_dir=Path(config.cluster.run_root) / run_id,
                             left=run_processes(run_id))
    (repo / ".corralignore").write_text("")
    config = cluster.config(run=RunSection(script=str(repo / ENTRY), code=str(repo),
                                           args=(str(private / "vocab.txt"),)), name="abs")
    run_id, events = asyncio.run(run_to_end(config))
    final = events[-1]
    assert isinstance(final, RunStatus), final
    return Table(repo=repo, runs=runs, refused=status_line(final))


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Table]:
    root = tmp_path_factory.mktemp("files")
    with contextlib.ExitStack() as stack:
        start = stack.enter_context(sshd_factory(root))
        yield _launch_all(root, start)


def test_every_file_a_script_reads_travels_to_a_host_without_the_folder(table: Table) -> None:
    done = table.runs["all"]
    assert done.final.state == "completed", done.printed
    assert done.left == []
    for host in ("h0", "h1"):
        cwd = Path(RunLayout(done.run_dir).script_cwd(host))
        assert (cwd / "seen" / "all").read_bytes() == EXPECTED
        assert (cwd / "checkpoints" / "last.pt").read_bytes() == b"step-7+1"  # a copy, written
    assert (table.repo / "checkpoints" / "last.pt").read_bytes() == b"step-7"  # never changed


def test_a_src_layout_runs_over_sshd(table: Table) -> None:
    done = table.runs["all"]
    assert done.final.state == "completed", done.printed
    assert done.left == []
    for host in ("h0", "h1"):
        seen = Path(RunLayout(done.run_dir).script_cwd(host), "out", "seen.json")
        assert json.loads(seen.read_text()) == {"name": "utils of the repo", "host": host}


def test_shards_left_home_fail_with_the_rule_and_the_fix(table: Table) -> None:
    failed = table.runs["tokens"]
    assert failed.final.state == "failed" and failed.left == []
    assert "AssertionError" in failed.printed
    assert "tokens (0.0 MiB) of" in failed.printed and "!/tokens/ at the end" in failed.printed


def test_model_weights_left_home_fail_with_the_rule_and_the_fix(table: Table) -> None:
    failed = table.runs["model"]
    assert failed.final.state == "failed" and "OSError" in failed.printed
    assert "model/model.safetensors is in" in failed.printed
    assert "*.safetensors (.corralignore)" in failed.printed
    assert "!/model/model.safetensors in" in failed.printed


def test_a_checkpoint_left_home_fails_with_the_rule_and_the_fix(table: Table) -> None:
    """What ``corral run`` prints of the run's status (the console and the report keep it):
    the ``FileNotFoundError``, what stayed home, the rule and the one line that sends it."""
    failed = table.runs["resume"]
    assert failed.final.state == "failed" and "FileNotFoundError" in failed.printed
    assert failed.left == []
    assert (f"checkpoints/last.pt is in {table.repo} but did not travel: checkpoints was left "
            f"out by checkpoints/ (.corralignore); the line !/checkpoints/ in "
            f"{table.repo / '.corralignore'} sends it") in failed.printed


def test_an_absolute_path_argument_a_host_lacks_is_named_before_launch(table: Table) -> None:
    assert "vocab.txt exists on this machine but not on h1" in table.refused, table.refused
