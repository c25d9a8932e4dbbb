"""A repository's script runs under corral as ``torchrun`` runs it from the repository's root, on
two local hosts: its own ``trainer.py`` and ``profiles/`` are what it imports (corral's
packages step aside, its opt-in stays importable as ``corral.ddp``), it reads
``configurator.py``, ``config/x.py`` and ``data/`` by relative path and writes ``out/ckpt.pt``
into each host's own working directory of the run, the shared code cache left byte for byte as
pushed; a script launched from a subfolder reaches its parent, and a ``src/`` layout whose
script puts ``src/`` on ``sys.path`` runs too (here, in that script's run, and over sshd in
``test_files_travel_sshd.py``'s runs); optional imports of three kinds never block, an unconditional
missing one does, naming its distribution.

The own-modules, relative-paths and optional-imports tests judge one run of one repository
(``root_run``): each is a fact of a script at the repository's root, and a run costs some
40 CPU-seconds of start-up; for the same reason the subfolder script's run also carries the
``src/`` packages (what it imports through ``..`` and through ``__file__`` are separate
modules, each asserted). Every run here is on two hosts, the master and one other: what
they prove is per host, and two hosts already run in two working directories from one shared
code cache (a third cost each run a launcher and a rank, some 7 CPU-seconds)."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from remote.api import LogLine, RankEvent, RunStatus, with_script
from remote.config.cluster import ClusterConfig, ClusterSection, HostSection, RunSection
from remote.config.task_code import USER_CODE_DIR
from remote.hosts.push import folder_files
from trainer.events import EndEvent, StartEvent
from trainer.run_layout import RunLayout

try:
    from runkit import run_processes
    from test_script_run_local import run_to_end
except ImportError:  # collected as a package
    from tests.remote.runkit import run_processes  # type: ignore[no-redef]
    from tests.remote.scenarios.test_script_run_local import run_to_end  # type: ignore[no-redef]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

HOSTS = 2
"""The master and one other host."""

TRAIN_LOOP = """\
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def train(steps=3):
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
    return model
"""

ROOT_SCRIPT = """\
import json
import os
from pathlib import Path

import torch

import profiles
import trainer
from trainer import Trainer
from corral.ddp import Shares  # corral's helper under the name no user module takes

try:
    import apex  # optional: under try/except ImportError
except ImportError:
    apex = None
wandb_log = False
if wandb_log:
    import wandb  # optional: behind a condition


def log_with_sklearn():
    import sklearn  # optional: inside a function never called

batch_size = 1
exec(open("configurator.py").read())  # as nanoGPT's train.py does, from the working directory
config = {}
exec(open("config/x.py").read(), config)
rows = Path("data/tiny/train.txt").read_text().split()
model = Trainer().train()
os.makedirs("out", exist_ok=True)
torch.save(model.module.state_dict(), "out/ckpt.pt")
Path("out/modules.json").write_text(json.dumps({
    "trainer": trainer.__file__, "profiles": profiles.WHOSE, "helper": Shares.__module__,
    "rank": int(os.environ["RANK"]), "host": os.environ["CORRAL_HOST"]}))
Path("out/reads.json").write_text(json.dumps({
    "batch_size": batch_size, "n_layer": config["n_layer"], "rows": rows,
    "host": os.environ["CORRAL_HOST"]}))
"""
"""A script at a repository's root, as nanoGPT's ``train.py``: it imports its own ``trainer``
and ``profiles`` modules (names corral's packages hold), tries three optional imports, reads
``configurator.py``, ``config/x.py`` and ``data/`` by relative path and writes ``out/``."""

ROOT_REPO = {"train.py": ROOT_SCRIPT,
             "trainer.py": TRAIN_LOOP + "\n\nclass Trainer:\n    train = staticmethod(train)\n",
             "profiles/__init__.py": "WHOSE = 'the user'\n",
             "configurator.py": "batch_size = 12\n", "config/x.py": "n_layer = 6\n",
             "data/tiny/train.txt": "a b c\n"}


def local_config(repo: Path, tmp_path: Path, script: str, hosts: int = HOSTS) -> ClusterConfig:
    """``hosts`` local hosts; cluster.toml at the repository's root, the code cache outside it."""
    sections = tuple(HostSection(name=f"h{i}", address="local", python=sys.executable,
                                 workdir=str(tmp_path / "work"), gpus=0, nproc=1, threads=1)
                     for i in range(hosts))
    return ClusterConfig(
        path=repo / "cluster.toml",
        cluster=ClusterSection(name="tree", master="h0", run_root=str(tmp_path / "runs")),
        hosts=sections, run=RunSection(script=script))


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def cache_as_pushed(repo: Path, work: Path) -> None:
    """Every code tree in the cache holds the user's files exactly as pushed, nothing more."""
    trees = [t for t in (work / "code").iterdir() if not t.name.startswith(".")]
    assert len(trees) == 1, trees
    pushed = {rel: path.read_bytes() for rel, path in folder_files(repo, USER_CODE_DIR)}
    found = {p.relative_to(trees[0]).as_posix(): p.read_bytes()
             for p in (trees[0] / USER_CODE_DIR).rglob("*") if p.is_file()}
    assert found == pushed


def seen(tmp_path: Path, run_id: str, hosts: int = HOSTS,
         name: str = "seen.json") -> dict[str, dict[str, object]]:
    """What each host's script wrote into ``out/name`` in its own working directory, by host."""
    layout = RunLayout(tmp_path / "runs" / run_id)
    return {f"h{i}": json.loads(Path(layout.script_cwd(f"h{i}"), "out", name).read_text())
            for i in range(hosts)}


async def completed(cfg: ClusterConfig) -> tuple[str, list[object]]:
    """The id and events of a run of ``cfg`` that completed on every rank, leaving nothing."""
    run_id, events = await run_to_end(cfg)
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "completed", final
    assert run_processes(run_id) == []
    # corral's own code kept working on every rank while the script held the names: each
    # rank's start and end events, written by corral around the script
    ends = {e.event.rank for e in events if isinstance(e, RankEvent)
            and isinstance(e.event, EndEvent) and e.event.status == "completed"}
    starts = {e.event.rank for e in events
              if isinstance(e, RankEvent) and isinstance(e.event, StartEvent)}
    assert starts == ends == set(range(len(cfg.hosts))), (starts, ends)
    return run_id, events


async def _completed_then_collected(cfg: ClusterConfig) -> tuple[str, list[object]]:
    try:
        return await completed(cfg)
    finally:
        gc.collect()  # finish local transports while their loop is still open


@pytest.fixture(scope="module")
def root_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Path, Path, str, list[object]]]:
    """(its tmp folder, the repository, run id, events) of one run of ``ROOT_REPO`` on two
    hosts, shared by the tests of a script at the repository's root."""
    tmp = tmp_path_factory.mktemp("root")
    repo = tmp / "repo"
    write(repo, ROOT_REPO)
    run_id, events = asyncio.run(_completed_then_collected(local_config(repo, tmp, "train.py")))
    yield tmp, repo, run_id, events


def test_the_scripts_own_trainer_and_profiles_modules_win(
        root_run: tuple[Path, Path, str, list[object]]) -> None:
    tmp_path, repo, run_id, _ = root_run
    for host, facts in seen(tmp_path, run_id, name="modules.json").items():
        assert facts["host"] == host
        assert str(facts["trainer"]).endswith(f"cwd/{host}/trainer.py"), facts
        assert facts["profiles"] == "the user"
        assert facts["helper"] == "trainer.integrations.ddp"
    cache_as_pushed(repo, tmp_path / "work")


def test_relative_reads_find_the_repo_and_writes_land_in_each_hosts_run_dir(
        root_run: tuple[Path, Path, str, list[object]]) -> None:
    tmp_path, repo, run_id, _ = root_run
    layout = RunLayout(tmp_path / "runs" / run_id)
    for host, facts in seen(tmp_path, run_id, name="reads.json").items():
        assert facts == {"batch_size": 12, "n_layer": 6, "rows": ["a", "b", "c"], "host": host}
        assert Path(layout.script_cwd(host), "out", "ckpt.pt").is_file()
    assert not (repo / "out").exists()  # the user's own folder is untouched
    cache_as_pushed(repo, tmp_path / "work")


SRC_LAYOUT = {
    "scripts/train.py": (
        "import json, os, sys\nfrom pathlib import Path\n"
        "sys.path.append(str(Path(__file__).resolve().parent.parent / 'src'))\n"
        "from training.loop import train\nfrom utils import NAME\n"
        "train()\nPath('out').mkdir(exist_ok=True)\n"
        "Path('out/seen.json').write_text(json.dumps({'name': NAME, "
        "'host': os.environ['CORRAL_HOST']}))\n"),
    "src/training/__init__.py": "",
    "src/training/loop.py": TRAIN_LOOP,
    "src/utils/__init__.py": "NAME = 'utils of the repo'\n",
}
"""A ``src/`` layout whose entry script in ``scripts/`` puts ``src/`` on ``sys.path``: run
whole over sshd as ``test_files_travel_sshd.py``'s script; its ``src/`` packages travel here in the
subfolder script's run."""


async def test_optional_imports_never_block_and_an_unconditional_missing_one_does(
        root_run: tuple[Path, Path, str, list[object]], tmp_path: Path) -> None:
    # ROOT_SCRIPT's three optional imports: warned of, and its run completed (root_run)
    _, _, _, events = root_run
    warned = [e.text for e in events if isinstance(e, LogLine) and "optional" in e.text]
    assert any("apex (under try/except ImportError" in t and "wandb (behind a condition" in t
               and "sklearn (inside a function" in t for t in warned), warned

    # the same script with an unconditional import of what no host has: blocked before it
    # starts, so two hosts show "each host" at the cost of checks alone
    repo = tmp_path / "repo"
    write(repo, {**ROOT_REPO, "train.py": "import hydra\n" + ROOT_SCRIPT})
    cfg = local_config(repo, tmp_path, "train.py")
    run_id, events = await run_to_end(cfg)
    final = events[-1]
    assert isinstance(final, RunStatus) and final.state == "failed", final
    assert final.report is not None
    blocked = [i for i in final.report.failures() if i.name == "imports"]
    assert {i.host for i in blocked} == {"h0", "h1"}  # each host, naming its interpreter
    for item in blocked:
        assert "hydra (train.py:1)" in item.detail and f"on {item.host} cannot find" in item.detail
        assert "pip install hydra-core" in item.hint
    assert not (tmp_path / "runs" / run_id / "cwd").exists()  # nothing started


SUBFOLDER_SCRIPT = (
    "import json, os, sys\nfrom pathlib import Path\nsys.path.insert(0, '..')\n"
    "sys.path.append(str(Path(__file__).resolve().parent.parent / 'src'))\n"
    "from pkg import NAME\nfrom loop import train\n"
    "from training.loop import train as src_train\nfrom utils import NAME as SRC_NAME\n"
    "train()\nrows = Path('../data/rows.txt').read_text().split()\n"
    "Path('../out').mkdir(exist_ok=True)\n"
    "Path('../out/seen.json').write_text(json.dumps({'name': NAME, 'src': SRC_NAME, "
    "'src_loop': src_train.__module__, 'rows': rows, 'host': os.environ['CORRAL_HOST']}))\n")
"""A script in ``sub/`` that reaches its parent by relative path (``..`` on ``sys.path``,
``../data``) and, as a ``src/`` layout's script does, puts the repository's ``src/`` on
``sys.path`` by its own ``__file__``."""


async def test_a_script_in_a_subfolder_reaching_its_parent_and_a_src_layout_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``corral run --script train.py --code ..`` from ``repo/sub``: the repository travels and
    each rank runs from its copy of ``sub``, so ``..`` on ``sys.path`` and ``../data`` resolve as
    under ``torchrun train.py`` started in ``sub``. The repository also has ``SRC_LAYOUT``'s
    ``src/`` packages, which the script reaches through ``__file__``: the import scan takes
    ``src/training`` and ``src/utils`` for the user's own and every rank imports them from its
    copy. One run proves both: each run costs a launcher and a rank on each host."""
    repo = tmp_path / "repo"
    src = {rel: text for rel, text in SRC_LAYOUT.items() if rel.startswith("src/")}
    write(repo, {"sub/train.py": SUBFOLDER_SCRIPT, "sub/loop.py": TRAIN_LOOP,
                 "pkg/__init__.py": "NAME = 'pkg of the repo'\n", "data/rows.txt": "x y\n",
                 **src})
    monkeypatch.chdir(repo / "sub")
    plain = replace(local_config(repo, tmp_path, "sub/train.py"), run=RunSection())
    cfg = with_script(plain, Path("train.py"), [], code=Path(".."))
    assert cfg.launch_dir == "sub" and cfg.run.code == str(repo.resolve())
    run_id, _ = await completed(cfg)
    for host, facts in seen(tmp_path, run_id).items():
        assert facts == {"name": "pkg of the repo", "src": "utils of the repo",
                         "src_loop": "training.loop", "rows": ["x", "y"], "host": host}
    cache_as_pushed(repo, tmp_path / "work")
