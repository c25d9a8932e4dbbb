"""A PyTorchJob's pods, run here: three processes of the exported start script with the
environment the controller gives each pod train to the parameters of one process of the same
cluster.toml's run (those any ``corral run`` of it gives), and ``corral report`` reads their
run directory once it is copied back to where corral looks for runs."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from console.model.recorded import model_from_history
from remote.api import export_kubernetes
from remote.config.read import load_cluster
from remote.records import tensorboard
from remote.records.history import load_history
from remote.records.runs import list_runs
from remote.records.summary import summarize

try:
    from conftest import free_port
    from runkit import RUN_LIMIT_S, one_process_flags
except ImportError:  # collected as a package
    from tests.remote.conftest import free_port  # type: ignore[no-redef]
    from tests.remote.runkit import RUN_LIMIT_S, one_process_flags  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "trainer"))
from trainer_runs import check, final_params, launch  # noqa: E402

pytestmark = pytest.mark.slow
HOSTS = ("first", "second", "third")


def write_cluster(tmp_path: Path) -> Path:
    hosts = "".join(f'[[hosts]]\nname = "{name}"\naddress = "local"\npython = '
                    f'"{sys.executable}"\nworkdir = "{tmp_path / "work"}"\ngpus = 0\nnproc = 1\n'
                    "threads = 1\n\n" for name in HOSTS)
    path = tmp_path / "cluster.toml"
    path.write_text(
        f'[cluster]\nname = "pods"\nrun_root = "{tmp_path / "runs"}"\n'
        f"rendezvous_port = {free_port()}\n\n{hosts}"
        '[run]\nsamples = 64\nglobal_batch = 9\nsplit = [4, 3, 2]\nsteps = 6\n'
        'policy = "static"\ncheckpoint_every = 1000\nlr = 0.01\n\n'
        '[kubernetes]\nimage = "registry.example/corral-torch:1"\n', encoding="utf-8")
    return path


def run_pods(tmp_path: Path, config_map: dict[str, dict[str, str]]) -> Path:
    """The start script in one process per pod: each with its own ``HOME`` holding the
    ConfigMap, all sharing one claim; the controller's RANK, WORLD_SIZE, MASTER_ADDR/PORT."""
    claim = tmp_path / "claim"
    claim.mkdir()
    port = free_port()
    procs = []
    for rank in range(len(HOSTS)):
        home = tmp_path / f"pod{rank}"
        bundle = home / "bundle"
        bundle.mkdir(parents=True)
        for key, text in config_map["data"].items():
            (bundle / key).write_text(text, encoding="utf-8")
        for key, data in config_map["binaryData"].items():
            (bundle / key).write_bytes(base64.b64decode(data))
        (home / "runs").symlink_to(claim)
        env = {**os.environ, "HOME": str(home), "RANK": str(rank),
               "WORLD_SIZE": str(len(HOSTS)), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "PET_NNODES": str(len(HOSTS)),
               "PET_NODE_RANK": str(rank), "PET_NPROC_PER_NODE": "1",
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        procs.append(subprocess.Popen(["sh", str(bundle / "start.sh")], env=env, cwd=home,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = [p.communicate(timeout=RUN_LIMIT_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(o[-2000:] for o in outputs)
    (run_dir,) = claim.iterdir()
    return run_dir


def test_pods_train_to_the_parameters_of_one_process_and_report_reads_them(
        tmp_path: Path) -> None:
    config_path = write_cluster(tmp_path)
    export = export_kubernetes(load_cluster(config_path), "pytorchjob")
    pods_dir = run_pods(tmp_path, export.objects[0])
    assert pods_dir.name == export.run_id
    alone = tmp_path / "alone"
    check(launch(1, *one_process_flags(load_cluster(config_path).run), "--run-dir", str(alone)))
    reference = final_params(alone)
    trained = final_params(pods_dir)
    assert trained.keys() == reference.keys()
    for name, tensor in reference.items():
        assert (trained[name] - tensor).abs().max().item() <= 1e-6 * max(
            tensor.abs().max().item(), 1e-12), name

    copied = tmp_path / "runs" / export.run_id  # what the documented `kubectl cp` line does
    shutil.copytree(pods_dir, copied, symlinks=False)
    done = subprocess.run([sys.executable, "-m", "console", "-c", str(config_path), "report",
                           export.run_id, "--json"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    (summary,) = json.loads(done.stdout)["runs"]
    assert summary["run_id"] == export.run_id
    assert summary["outcome"]["state"] == "completed"
    assert summary["steps_done"] == 6 and summary["policy"] == "static"
    assert sorted({r["host"] for r in summary["ranks"]}) == sorted(HOSTS)
    # the console's past runs list it and replay it; TensorBoard files come from it
    config = load_cluster(config_path)
    assert export.run_id in [info.run_id for info in list_runs(config)]
    history = load_history(copied)
    outcome = summarize(history)[0].outcome
    model = model_from_history(history, outcome, cluster_name="pods", policy="static")
    assert model.state == "completed" and model.step == 6
    if tensorboard.available():
        assert tensorboard.convert_run(copied).points > 0
