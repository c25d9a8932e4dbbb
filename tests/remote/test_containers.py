"""``[hosts.container]`` without an engine: the section's rules, and the engine command lines
for podman and docker from the one builder (what ``--dry-run`` shows). The real engine runs in
tests/remote/scenarios/test_containers_podman.py (podman only: docker's daemon does not run
here)."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from remote.checks.plan import LaunchFacts
from remote.config.cluster import (
    ClusterConfig,
    ClusterSection,
    ConfigError,
    ContainerSection,
    HostSection,
    KubernetesSection,
)
from remote.config.read import parse_cluster
from remote.config.task_code import user_code
from remote.hosts.container import container_name, python_in_container
from remote.hosts.interpreter import python_word
from remote.k8s.export import export_manifests
from remote.run.preview import preview
from remote.run.stop import stop_script

SECRET = "s3cr3t-value"


def _config(box: ContainerSection, gpus: int | str = 2) -> ClusterConfig:
    hosts = (HostSection(name="plain", address="gpu0.example", gpus=0, nproc=1),
             HostSection(name="boxed", address="gpu1.example", gpus=gpus, nproc=2,  # type: ignore[arg-type]
                         env={"HF_TOKEN": SECRET}, container=box))
    return ClusterConfig(path=Path("/tmp/cluster.toml"),
                         cluster=ClusterSection(name="c", run_root="/data/runs"), hosts=hosts)


def _dry_run(config: ClusterConfig) -> str:
    facts = LaunchFacts(gpus={"plain": 0, "boxed": 2}, interfaces={}, port=29400)
    shown = preview(config, facts, 29400, "ab" * 32, "c-20260101-000000-abcdef",
                    user_code(config.run, config.path.parent))
    return next(h.command for h in shown.hosts if h.host == "boxed")


def test_docker_form_passes_gpus_env_names_and_mounts_never_a_value() -> None:
    command = _dry_run(_config(ContainerSection(image="nvcr.io/nvidia/pytorch:25.01-py3",
                                                engine="docker", options=("--shm-size", "8g"))))
    assert command.startswith("$(mkdir -p ")
    words = shlex.split(command.split(">/dev/null 2>&1)docker ", 1)[1])  # past the mkdir
    assert words[:8] == ["run", "--rm", "-i", "--network", "host", "--ipc", "host", "--name"]
    assert words[8] == container_name("c-20260101-000000-abcdef", "boxed")
    assert "corral.run=c-20260101-000000-abcdef" in words
    assert words[words.index("--gpus"):words.index("--gpus") + 2] == ["--gpus", "all"]
    assert "nvidia.com/gpu=all" not in words
    assert "-e" in words and "HF_TOKEN" in words and SECRET not in command
    assert "/data/runs:/data/runs" in words and '"$HOME"/.corral' in command
    assert words[words.index("--shm-size"):words.index("--shm-size") + 2] == ["--shm-size", "8g"]
    assert "--user" in words and "--pull" in words  # docker: the host user; never a pull
    image = words.index("nvcr.io/nvidia/pytorch:25.01-py3")
    assert words[image + 1:image + 3] == ["sh", "-c"]
    inner = words[image + 3]
    assert "-m trainer.launcher" in inner and "--rdzv-id c-20260101-000000-abcdef" in inner
    # The host's shell writes the exit file once the engine's client has returned, so a run
    # that has ended leaves no client behind.
    assert "hosts/boxed.exit" not in inner and "hosts/boxed.exit" in " ".join(words[image + 4:])


def test_podman_form_passes_gpus_through_cdi_and_a_rootfs_as_an_overlay() -> None:
    command = _dry_run(_config(ContainerSection(rootfs="/srv/torch-root", engine="podman")))
    assert "--device nvidia.com/gpu=all" in command and "--gpus" not in command
    assert "--rootfs /srv/torch-root:O sh -c" in command and "--user" not in command


def test_gpus_are_passed_only_where_asked() -> None:
    cpu = _config(ContainerSection(image="img:1", engine="docker"), gpus=0)
    assert "--gpus" not in python_in_container(cpu.hosts[1])
    auto = python_word(_config(ContainerSection(image="img:1", engine="docker"),
                               gpus="auto").hosts[1])
    assert "$([ -e /dev/nvidiactl ] && echo --gpus all)" in auto


def test_probes_run_in_a_probe_container_with_the_hosts_pids() -> None:
    word = python_word(_config(ContainerSection(image="img:1")).hosts[1])
    assert "--label corral.probe --pid host" in word and word.endswith("img:1 python3")
    assert '"$(command -v podman || echo docker)" run' in word  # the engine the host has


def test_stop_ends_torchrun_and_removes_the_runs_containers() -> None:
    host = _config(ContainerSection(image="img:1", engine="podman")).hosts[1]
    script = stop_script("/data/runs/r-1", host.name, "r-1", 5.0, host)
    assert "pkill -TERM -f '[-]-rdzv-id[ =]r-1( |/|$)'" in script
    assert "podman rm -f $(" in script and "podman ps -a -q --filter label=corral.run=r-1" in script
    assert "timeout 20" in script  # each engine command is bounded in time


def test_k8s_export_uses_the_hosts_container_image() -> None:
    config = _config(ContainerSection(image="registry.example/torch:2"), gpus=0)
    config = replace(config, kubernetes=KubernetesSection(image="default/other:1"),
                     hosts=tuple(replace(h, env={}) for h in config.hosts))  # env: refused
    exported = str(export_manifests(config, "jobset"))
    assert "registry.example/torch:2" in exported and "default/other:1" in exported


@pytest.mark.parametrize(("table", "message"), [
    ('engine = "podman"', "container.image: missing; give the image"),
    ('image = "a:1"\nrootfs = "/"', "container.rootfs: give image or rootfs, not both"),
    ('rootfs = "/"\nengine = "docker"', 'needs engine = "podman"'),
    ('image = "a:1"\nengin = "podman"', "container.engin: unknown key; did you mean 'engine'?"),
    ('image = "a:1"\nmounts = ["data"]', "container.mounts[0]: must be an absolute host path"),
])
def test_a_wrong_container_table_is_named_with_its_fix(table: str, message: str) -> None:
    text = (f'[cluster]\nname = "c"\n[[hosts]]\nname = "h"\naddress = "local"\n'
            f"[hosts.container]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        parse_cluster(text, path="cluster.toml")
    assert message in str(caught.value)
