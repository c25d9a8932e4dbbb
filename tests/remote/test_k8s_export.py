"""``corral export k8s``: the manifests are what the CRDs and Kubernetes accept (strictly),
the format fits the host kinds, each kind's pods get its nodes and GPUs, and every pod runs
the command ``corral run --dry-run`` shows for its host; what cannot be exported is one line
naming the key and the fix."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from console import cli
from remote.api import export_kubernetes, kubernetes_next_steps
from remote.checks.plan import LaunchFacts
from remote.config.cluster import ClusterConfig
from remote.config.read import parse_cluster
from remote.k8s.export import K8sExport
from remote.k8s.yaml_text import dump_all
from remote.records.runs import local_run_dir
from remote.run.preview import preview

try:
    from k8s_schemas import all_errors, crd_dir
except ImportError:  # collected as a package
    from tests.remote.k8s_schemas import all_errors, crd_dir  # type: ignore[no-redef]

RUN_ID = "k8s-20260101-000000-abcdef"
A100 = '{ "nvidia.com/gpu.product" = "NVIDIA-A100-SXM4-40GB" }'
T4 = '{ "nvidia.com/gpu.product" = "Tesla-T4" }'
HEAD = ('[cluster]\nname = "k8s"\nmaster_addr = "10.0.0.1"\n\n'
        '[kubernetes]\nimage = "registry.example/corral-torch:1"\nnamespace = "ml"\n\n')


def host(name: str, address: str, gpus: int, selector: str = "", extra: str = "") -> str:
    line = f"node_selector = {selector}\n" if selector else ""
    return (f'[[hosts]]\nname = "{name}"\naddress = "{address}"\ngpus = {gpus}\n'
            f"{line}{extra}\n")


THREE_IN_TWO = (HEAD + host("a100", "10.0.0.1", 2, A100) + host("t4-1", "10.0.0.2", 2, T4)
                + host("t4-2", "10.0.0.3", 2, T4)
                + '[run]\nglobal_batch = 60\nsplit = [14, 14, 8, 8, 8, 8]\npolicy = "static"\n')
FOUR_IN_THREE = (HEAD + host("a100", "10.0.0.1", 2, A100) + host("t4-1", "10.0.0.2", 1, T4)
                 + host("t4-2", "10.0.0.3", 1, T4)
                 + host("cpu", "10.0.0.4", 0,
                        extra='nproc = 2\nthreads = 4\ninterface = "enp3s0"\n')
                 + '[run]\nglobal_batch = 60\nsplit = [16, 16, 8, 8, 6, 6]\n'
                   'policy = "dynamic"\nbackend = "gloo"\n')


def config_of(tmp_path: Path, text: str) -> ClusterConfig:
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return parse_cluster(text, path=path)


def pod_commands(export: K8sExport) -> list[str]:
    """Each pod's command from the start script, by pod index."""
    script = export.objects[0]["data"]["start.sh"].splitlines()
    return [line.strip()[len("launch() { "):] for line in script
            if line.strip().startswith("launch() { ")]


def command_words(command: str) -> tuple[dict[str, str], list[str], list[str]]:
    """A ``corral run`` host command: its env, torchrun's words and the trainer's words, each
    without addresses (rendezvous endpoint, local address) and the run directory."""
    words = shlex.split(command.split("; echo $?")[0], posix=True)
    env = dict(w.split("=", 1) for w in words[1:words.index("-m")] if "=" in w)
    torchrun = words[words.index("trainer.launcher") + 1:words.index("trainer") - 1]
    trainer = words[words.index("trainer") + 1:]
    for flag in ("--rdzv-endpoint", "--local-addr"):
        if flag in torchrun:
            del torchrun[torchrun.index(flag):torchrun.index(flag) + 2]
    del trainer[trainer.index("--run-dir"):trainer.index("--run-dir") + 2]
    return env, torchrun, trainer


def dry_run_commands(config: ClusterConfig, export: K8sExport) -> list[str]:
    """What ``corral run --dry-run`` prints for each host (its ``LaunchPreview``)."""
    facts = LaunchFacts(gpus={h.name: h.gpus for h in config.hosts},  # type: ignore[misc]
                        interfaces={h.name: None for h in config.hosts}, port=29500)
    digest = export.objects[0]["data"]["start.sh"].split("/code/")[1].split()[0]
    planned = preview(config, facts, 29500, digest, export.run_id, export.user)
    return [h.command for h in planned.hosts]


def pod_specs(export: K8sExport) -> list[tuple[int, dict[str, Any]]]:
    """(replicas, pod spec) per pod template of the job, in pod-index order."""
    job = export.objects[-1]
    if job["kind"] == "PyTorchJob":
        specs = job["spec"]["pytorchReplicaSpecs"]
        return [(specs[k]["replicas"], specs[k]["template"]["spec"])
                for k in ("Master", "Worker") if k in specs]
    return [(g["replicas"], g["template"]["spec"]["template"]["spec"])
            for g in job["spec"]["replicatedJobs"]]


@pytest.mark.parametrize(("text", "expected"), [(THREE_IN_TWO, "pytorchjob"),
                                                 (FOUR_IN_THREE, "jobset")])
def test_the_format_fits_the_kinds_and_each_pod_runs_its_hosts_dry_run_command(
        tmp_path: Path, text: str, expected: str) -> None:
    config = config_of(tmp_path, text)
    export = export_kubernetes(config, run_id=RUN_ID)
    assert export.format == expected
    commands = pod_commands(export)
    hosts = config.hosts
    assert len(commands) == len(hosts)
    world = config.world_size_hint
    assert world == len(config.run.split or ())
    # replicas x ranks per pod = every rank, and each kind's pods get its nodes and GPUs
    pod_index = 0
    counted = 0
    for replicas, spec in pod_specs(export):
        members = hosts[pod_index:pod_index + replicas]
        pod_index += replicas
        (container,) = spec["containers"]
        gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)
        for member in members:
            assert gpus == member.gpus
            assert spec.get("nodeSelector", {}) == member.node_selector
            counted += member.known_nproc or 0
        if export.format == "pytorchjob":
            assert replicas * int(export.objects[-1]["spec"]["nprocPerNode"]) == sum(
                m.known_nproc or 0 for m in members)
    assert pod_index == len(hosts) and counted == world
    # every pod's command is its host's dry-run command apart from addresses
    for pod, shown in zip(commands, dry_run_commands(config, export), strict=True):
        pod_env, pod_torchrun, pod_trainer = command_words(pod)
        env, torchrun, trainer = command_words(shown)
        assert pod_trainer == trainer
        assert pod_torchrun == torchrun
        for key in ("CORRAL_HOST", "CORRAL_RANK_BASE", "CORRAL_RUN_ID", "CUDA_VISIBLE_DEVICES"):
            assert pod_env.get(key) == env.get(key), key
        assert "GLOO_SOCKET_IFNAME" not in pod_env  # a pod has its own network
    assert "--split" in trainer and "--policy" in trainer


@pytest.mark.skipif(crd_dir() is None, reason="no shared/k8s beside the repository")
@pytest.mark.parametrize(("text", "formats"), [
    (THREE_IN_TWO, ("pytorchjob", "jobset")),
    (FOUR_IN_THREE, ("jobset",)),
    (HEAD + host("a", "10.0.0.1", 1, T4) + host("b", "10.0.0.2", 1, T4),
     ("pytorchjob", "jobset", "trainjob")),
    (HEAD.replace('namespace = "ml"', 'namespace = "ml"\ncreate_pvc = true\n'
                  'storage_class = "nfs"\ndata_pvc = "models"\nservice_account = "trainer"\n'
                  'image_pull_secret = "regcred"') + host("a", "10.0.0.1", 0),
     ("pytorchjob", "jobset", "trainjob")),
])
def test_every_manifest_passes_its_schema_strictly_and_the_rules_beside_it(
        tmp_path: Path, text: str, formats: tuple[str, ...]) -> None:
    config = config_of(tmp_path, text)
    for chosen in formats:
        export = export_kubernetes(config, chosen, run_id=RUN_ID)
        assert [o["kind"] for o in export.objects][:2] == ["ConfigMap", "PersistentVolumeClaim"]
        assert all_errors(export.objects) == [], chosen


@pytest.mark.skipif(crd_dir() is None, reason="no shared/k8s beside the repository")
def test_the_strict_check_would_catch_a_wrong_manifest(tmp_path: Path) -> None:
    export = export_kubernetes(config_of(tmp_path, THREE_IN_TWO), run_id=RUN_ID)
    job = export.objects[-1]
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["nodeSelectr"] = {}
    job["spec"]["pytorchReplicaSpecs"]["Chief"] = job["spec"]["pytorchReplicaSpecs"]["Worker"]
    config_map = export.objects[0]
    config_map["dataa"] = {}
    errors = all_errors(export.objects)
    assert any("nodeSelectr" in e for e in errors)
    assert any("Master and Worker" in e for e in errors)
    assert any(e.startswith("ConfigMap") and "dataa" in e for e in errors)


def test_the_yaml_stream_reads_back_as_the_objects(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    export = export_kubernetes(config_of(tmp_path, FOUR_IN_THREE), run_id=RUN_ID)
    assert list(yaml.safe_load_all(export.yaml())) == list(export.objects)
    odd = {"a": ["yes", "1", "x: y", "", "#c", "multi\nline\n", " lead\n", "tail \n"],
           "no": None, "n": True, "b": {"c": [], "d": {}}, "e": [[1, 2.5], {"f": "-"}]}
    assert next(yaml.safe_load_all(dump_all([odd]))) == odd


def export_cli(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str],
               *args: str) -> tuple[int, str, str]:
    (tmp_path / "cluster.toml").write_text(text, encoding="utf-8")
    code = cli.main(["export", "k8s", "-c", str(tmp_path / "cluster.toml"), *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("text", "args", "names"), [
    (FOUR_IN_THREE, ("--format", "pytorchjob"), ('hosts[3] (name "cpu")', "--format jobset")),
    (FOUR_IN_THREE, ("--format", "trainjob"), ('hosts[1] (name "t4-1")', "--format jobset")),
    (HEAD + host("a", "10.0.0.1", 2, A100) + host("b", "10.0.0.2", 2, T4, "nproc = 1\n"),
     ("--format", "pytorchjob"), ('hosts[1] (name "b").nproc', "same nproc")),
    (HEAD + '[[hosts]]\nname = "a"\naddress = "10.0.0.1"\n', (),
     ('hosts[0] (name "a").gpus', "set gpus = N")),
    (HEAD.replace('image = "registry.example/corral-torch:1"\n', "") + host("a", "h", 1), (),
     ("[kubernetes] image", 'set [kubernetes] image = "REGISTRY/IMAGE:TAG"')),
    (HEAD.replace('name = "k8s"', 'name = "My_Cluster"') + host("a", "h", 1), (),
     ("[cluster] name", '"my-cluster"', "[kubernetes] job_name")),
    (HEAD + host("gpu_box", "10.0.0.1", 1) + host("cpu", "10.0.0.2", 0), ("--format", "jobset"),
     ('hosts[0] (name "gpu_box").name', '"gpu-box"')),
    (HEAD.replace('namespace = "ml"', 'namespace = "ML"') + host("a", "h", 1), (),
     ("[kubernetes] namespace", '"ml"')),
    (HEAD + host("a", "h", 1, extra='env = { PET_NNODES = "2" }\n'), (),
     ('hosts[0] (name "a").env.PET_NNODES', "remove it")),
    # A host's env is never dropped silently nor written in plain text (issue 41 item 7).
    (HEAD + host("a", "h", 1, extra='env = { HF_TOKEN = "hf_secret" }\n'), (),
     ('hosts[0] (name "a").env', "HF_TOKEN", "Kubernetes Secret")),
    (HEAD + host("a", "h", 1, selector='{ "bad key!" = "x" }'), (),
     ("node_selector", "is not a label key")),
])
def test_what_cannot_be_exported_is_one_line_naming_the_key_and_the_fix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
        args: tuple[str, ...], names: tuple[str, ...]) -> None:
    code, out, err = export_cli(tmp_path, text, capsys, *args)
    assert code == 2 and out == ""
    message = [line for line in err.splitlines() if line.strip()]
    assert len(message) <= 2 and message[0].startswith("corral: "), err  # a title + one problem
    assert "Traceback" not in err
    for name in names:
        assert name in err, (name, err)


def test_each_pod_finds_its_host_by_the_index_its_controller_gives_it(tmp_path: Path) -> None:
    # kinds interleaved in cluster.toml: the JobSet numbers pods group by group
    config = config_of(tmp_path, HEAD + host("a", "10.0.0.1", 1, T4) + host("b", "10.0.0.2", 0)
                       + host("c", "10.0.0.3", 1, T4) + host("d", "10.0.0.4", 2, A100))
    export = export_kubernetes(config, run_id=RUN_ID)
    assert export.format == "jobset"
    groups = export.objects[-1]["spec"]["replicatedJobs"]
    assert [(g["name"], g["replicas"]) for g in groups] == [("a", 2), ("b", 1), ("d", 1)]
    for group in groups:
        (container,) = group["template"]["spec"]["template"]["spec"]["containers"]
        (index,) = [e for e in container["env"] if e["name"] == "CORRAL_NODE"]
        assert "jobset.sigs.k8s.io/job-global-index" in index["valueFrom"]["fieldRef"]["fieldPath"]
    script = export.objects[0]["data"]["start.sh"]
    assert 'node="${CORRAL_NODE:?' in script and "endpoint=k8s-a-0-0.k8s:29500" in script
    by_index = [command_words(c)[0] for c in pod_commands(export)]
    assert [(e["CORRAL_HOST"], e["CORRAL_RANK_BASE"]) for e in by_index] == [
        ("a", "0"), ("c", "2"), ("b", "1"), ("d", "3")]
    for chosen, variable in (("pytorchjob", "RANK"), ("trainjob", "PET_NODE_RANK")):
        one_kind = config_of(tmp_path, HEAD + host("a", "10.0.0.1", 1) + host("b", "10.0.0.2", 1))
        script = export_kubernetes(one_kind, chosen).objects[0]["data"]["start.sh"]
        assert f'node="${{{variable}:?' in script


def test_the_copy_back_pod_is_a_valid_pod_mounting_the_claim(tmp_path: Path) -> None:
    validate = pytest.importorskip("kubernetes_validate")
    config = config_of(tmp_path, THREE_IN_TWO)
    export = export_kubernetes(config, run_id=RUN_ID)
    steps = kubernetes_next_steps(config, export, "k8s/")
    (run_line,) = [s for s in steps if " run corral-copy " in s]
    overrides = json.loads(shlex.split(run_line.split("--overrides=")[1])[0])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "corral-copy"}, **overrides}
    validate.validate(pod, validate.latest_version(), strict=True)
    (claim,) = overrides["spec"]["volumes"]
    assert claim["persistentVolumeClaim"]["claimName"] == "corral-runs"
    (cp_line,) = [s for s in steps if " cp " in s]
    source, target = shlex.split(cp_line)[-2:]
    assert source == f"corral-copy:/runs/{RUN_ID}"
    assert Path(target) == local_run_dir(config, RUN_ID)  # where corral report looks


def test_a_scripts_data_is_named_first_in_the_next_steps(tmp_path: Path) -> None:
    config = config_of(tmp_path, THREE_IN_TWO)
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "input.txt").write_text("First Citizen:\n")
    scripted = replace(config, run=replace(config.run, script="train.py"))
    steps = kubernetes_next_steps(scripted, export_kubernetes(scripted, run_id=RUN_ID), "k8s/")
    assert steps[0].startswith("# first, the script's data: 1 file, ")
    assert "data/input.txt" in steps[0] and "mount it in the pods" in steps[0]
    assert steps[1].startswith("kubectl apply")
