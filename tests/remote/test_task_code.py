"""[run] task / task_options / code: checked when cluster.toml is read, the user's folder pushed
content-addressed with the trainer, and the flags that reach every host."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from runkit import launch_local_until_exit
from test_run_quoting import FAKE_PYTHON

from remote.api import CheckItem
from remote.checks.plan import HostPlan
from remote.checks.preflight import check_cluster
from remote.config.cluster import ConfigError
from remote.config.read import load_cluster, parse_cluster
from remote.config.task_code import USER_CODE_DIR, option_flags, user_code
from remote.hosts.pool import HostPool
from remote.hosts.push import build_bundle
from remote.records.runs import run_dir_for
from remote.run.launch import LaunchPlan
from trainer.tasks.loader import task_options

HEAD = '[cluster]\nname = "t"\nmaster = "a"\n[[hosts]]\nname = "a"\naddress = "local"\ngpus = 0\n'


def _problems(text: str, path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        parse_cluster(text, path=path)
    return str(info.value)


def _user_tree(tmp_path: Path) -> Path:
    folder = tmp_path / "my code"
    (folder / "tasks").mkdir(parents=True)
    (folder / "tasks" / "mine.py").write_text("def build(options):\n    pass\n")
    (folder / "helpers.py").write_text("X = 1\n")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref\n")
    return folder


def test_task_keys_are_read_with_their_toml_types(tmp_path: Path) -> None:
    folder = _user_tree(tmp_path)
    text = HEAD + ('[run]\ntask = "my code/tasks/mine.py:build"\ncode = "my code"\n'
                   '[run.task_options]\nlora_targets = ["q_proj", "v_proj"]\nseq_len = 64\n'
                   'name = "16"\nflag = true\n')
    config = parse_cluster(text, path=tmp_path / "cluster.toml")
    assert config.run.task_options == {"lora_targets": ["q_proj", "v_proj"], "seq_len": 64,
                                       "name": "16", "flag": True}
    # What the trainer parses back from the flags is what the TOML said, types included.
    words = option_flags(config.run.task_options)
    pairs = [tuple(w.split("=", 1)) for w in words[1::2]]
    assert task_options(pairs) == config.run.task_options  # type: ignore[arg-type]
    assert folder.is_dir()


@pytest.mark.parametrize(
    ("run", "needle"),
    [
        ('task = "nowhere.py:build"', "[run] task: task file"),
        ('task = "tasks/mine.py:2x"', "is not a Python function name"),
        ('task = "imagenet"', "expected image, causal_lm or FILE.py:FUNCTION"),
        ('task = "my code/tasks/mine.py"\ncode = "elsewhere"', "[run] code: code folder"),
        ('task = "my code/tasks/mine.py"\ncode = "my code/tasks/sub"', "code folder"),
        ('task = "causal_lm"\ncode = "my code"', "is for a user task"),
        ('task = "causal_lm"\n[run.task_options]\nmodel = { path = "x" }', "task_options"),
    ],
)
def test_bad_task_keys_are_named(tmp_path: Path, run: str, needle: str) -> None:
    _user_tree(tmp_path)
    assert needle in _problems(HEAD + "[run]\n" + run + "\n", tmp_path / "cluster.toml")


def _members(bundle_tar: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(bundle_tar)) as tar:
        return tar.getnames()


def test_the_user_folder_is_pushed_content_addressed(tmp_path: Path) -> None:
    folder = _user_tree(tmp_path)
    plain = build_bundle()
    first = build_bundle(user_folder=folder)
    names = _members(first.tar)
    assert f"{USER_CODE_DIR}/tasks/mine.py" in names and f"{USER_CODE_DIR}/helpers.py" in names
    assert not any(".git" in n for n in names)
    assert first.digest != plain.digest and first.digest == build_bundle(user_folder=folder).digest
    (folder / "helpers.py").write_text("X = 2\n")
    assert build_bundle(user_folder=folder).digest != first.digest


def test_the_task_file_and_options_reach_the_trainer_as_data(tmp_path: Path) -> None:
    _user_tree(tmp_path)
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    nasty = f"x'\"; touch {tmp_path / 'canary'} $(touch canary)"
    head = HEAD.replace('master = "a"\n', f'master = "a"\nrun_root = "{tmp_path / "runs"}"\n')
    text = (head + f'python = "{fake}"\nworkdir = "{tmp_path / "work dir"}"\n'
            f'[run]\ntask = "my code/tasks/mine.py:build"\ncode = "my code"\nsteps = 2\n'
            f'[run.task_options]\nnote = {json.dumps(nasty)}\n')
    config = parse_cluster(text, path=tmp_path / "cluster.toml")
    run_id = "t-20261122-000000-abcdef"
    plan = LaunchPlan(run_id=run_id, run_dir=run_dir_for(config, run_id),
                      code_digest="e" * 64, master_addr="127.0.0.1", port=29998, nnodes=1,
                      user=user_code(config.run, config.path.parent))
    host = config.hosts[0]

    place = HostPlan(host=host, node_rank=0, first_rank=0, nproc=1, device="cpu", gpus=0,
                     visible_devices="", interface=None, local_addr=None)
    asyncio.run(launch_local_until_exit(config, plan, place))
    argv = json.loads((Path(plan.run_dir) / "argv.json").read_text())["argv"]
    tree = tmp_path / "work dir" / "code" / ("e" * 64)
    assert argv[argv.index("--task") + 1] == f"{tree}/{USER_CODE_DIR}/tasks/mine.py:build"
    assert argv[argv.index("--task-option") + 1] == f"note={nasty}"
    assert not (tmp_path / "canary").exists()


async def _check(tmp_path: Path, run: str, python: str) -> list[CheckItem]:
    path = tmp_path / "cluster.toml"
    path.write_text(HEAD.replace('master = "a"\n', f'master = "a"\nrun_root = "{tmp_path}/r"\n')
                    + f'python = "{python}"\nworkdir = "{tmp_path}/work"\nnproc = 1\n'
                    + f"[run]\nsteps = 2\n{run}\n")
    config = load_cluster(path)
    pool = HostPool(config)
    try:
        report = await check_cluster(config, pool)
    finally:
        await pool.aclose()
    return [i for i in report.items if i.name == "packages"]


async def test_check_names_a_host_without_bitsandbytes_for_a_quantised_base(
        tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    run = 'task = "causal_lm"\n[run.task_options]\nload_in_4bit = true'
    found = await _check(tmp_path, run, sys.executable)
    assert len(found) == 1 and found[0].ok and "bitsandbytes 0." in found[0].detail
    bare = "/usr/bin/python3"
    if not Path(bare).exists() or subprocess.run(
            [bare, "-c", "import bitsandbytes"]).returncode == 0:
        pytest.skip("no interpreter without bitsandbytes on this machine")
    missing = await _check(tmp_path, run, bare)
    assert len(missing) == 1 and not missing[0].ok and "bitsandbytes" in missing[0].detail
    assert missing[0].hint.endswith("'bitsandbytes>=0.49,<1'")
    # Without a quantised base, bitsandbytes is not asked for.
    plain = await _check(tmp_path, 'task = "causal_lm"', sys.executable)
    assert "bitsandbytes" not in plain[0].detail


def test_the_image_task_never_imports_transformers() -> None:
    code = ("import sys; from trainer.settings.train_config import TrainConfig; "
            "from trainer.tasks.loader import build_task; import trainer.train; "
            "build_task(TrainConfig(samples=64, global_batch=8)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('transformers', 'peft')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


def test_the_llm_example_is_a_valid_cluster_toml() -> None:
    config = load_cluster(Path(__file__).resolve().parents[2] / "examples" / "llm.toml")
    assert config.run.task == "causal_lm" and config.run.task_options["lora_r"] == 16
    assert [h.slowdown for h in config.hosts] == [1.0, 2.0, 3.0]
