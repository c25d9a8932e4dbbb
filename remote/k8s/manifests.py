"""The Kubernetes objects of one export, as plain dicts (``remote.k8s.export`` assembles them).

Every pod mounts the ConfigMap (start script and pushed code) at ``$HOME/bundle``, the
run-directory claim at ``$HOME/runs``, a scratch ``$HOME/code`` and, when set, the data claim
at ``$HOME/data``; it requests its kind's GPUs and runs on its kind's nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from remote.config.exports import KubernetesSection
from remote.k8s.kinds import POD_HOME, HostKind
from remote.k8s.pod_command import BUNDLE_DIR, CODE_ARCHIVE, START_SCRIPT
from trainer.run_layout import RunLayout

Manifest = dict[str, Any]
GPU_RESOURCE = "nvidia.com/gpu"
"""The extended resource a GPU pod requests (NVIDIA's device plugin)."""
RUN_ID_LABEL = "corral/run-id"
TRAINJOB_RUNTIME = "torch-distributed"
"""The ClusterTrainingRuntime a TrainJob uses (Kubeflow Trainer's torchrun runtime)."""
JOBSET_INDEX_ANNOTATION = "jobset.sigs.k8s.io/job-global-index"
"""A JobSet pod's index among all its jobs' pods (one pod per job here)."""
NODE_ENV = "CORRAL_NODE"
"""A JobSet pod's index, from ``JOBSET_INDEX_ANNOTATION`` (the downward API)."""
PYTORCHJOB_PORT_NAME = "pytorchjob-port"
"""The container port the PyTorchJob controller takes ``MASTER_PORT`` from."""


@dataclass(frozen=True, kw_only=True)
class Pods:
    """What every pod of an export shares."""

    settings: KubernetesSection
    job: str
    run_id: str
    port: int
    config_map: str

    def meta(self, name: str) -> Manifest:
        """``metadata`` of a top-level object."""
        return {"name": name, "namespace": self.settings.namespace, "labels": self.labels()}

    def labels(self) -> dict[str, str]:
        """Labels on every object and pod (``kubectl get pods -l corral/run-id=...``)."""
        return {"app.kubernetes.io/managed-by": "corral", RUN_ID_LABEL: self.run_id}

    def volumes(self) -> tuple[list[Manifest], list[Manifest]]:
        """The pods' volumes and the matching mounts."""
        volumes: list[Manifest] = [
            {"name": "bundle", "configMap": {"name": self.config_map}},
            {"name": "runs", "persistentVolumeClaim": {"claimName": self.settings.runs_pvc}},
            {"name": "code", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory"}},
        ]
        mounts: list[Manifest] = [
            {"name": "bundle", "mountPath": f"{POD_HOME}/{BUNDLE_DIR}", "readOnly": True},
            {"name": "runs", "mountPath": f"{POD_HOME}/runs"},
            {"name": "code", "mountPath": f"{POD_HOME}/code"},
            {"name": "shm", "mountPath": "/dev/shm"},
        ]
        if self.settings.data_pvc:
            volumes.append({"name": "data", "persistentVolumeClaim": {
                "claimName": self.settings.data_pvc, "readOnly": True}})
            mounts.append({"name": "data", "mountPath": f"{POD_HOME}/data", "readOnly": True})
        return volumes, mounts

    def command(self) -> list[str]:
        """The container's command: the ConfigMap's start script."""
        return ["sh", f"{POD_HOME}/{BUNDLE_DIR}/{START_SCRIPT}"]

    def env(self, *, index_from_annotation: bool = False) -> list[Manifest]:
        """``HOME`` (and a JobSet pod's index)."""
        env: list[Manifest] = [{"name": "HOME", "value": POD_HOME}]
        if index_from_annotation:
            path = f"metadata.annotations['{JOBSET_INDEX_ANNOTATION}']"
            env.append({"name": NODE_ENV, "valueFrom": {"fieldRef": {"fieldPath": path}}})
        return env

    def pod_extras(self, kind: HostKind) -> Manifest:
        """Node selector, service account and pull secret of ``kind``'s pods."""
        extras: Manifest = {}
        if kind.node_selector:
            extras["nodeSelector"] = dict(kind.node_selector)
        if self.settings.service_account:
            extras["serviceAccountName"] = self.settings.service_account
        if self.settings.image_pull_secret:
            extras["imagePullSecrets"] = [{"name": self.settings.image_pull_secret}]
        return extras

    def pod_template(self, kind: HostKind, container: str, *, jobset: bool = False
                     ) -> Manifest:
        """A pod template for ``kind`` with one container named ``container``."""
        volumes, mounts = self.volumes()
        main: Manifest = {"name": container, "image": kind.image, "command": self.command(),
                          "env": self.env(index_from_annotation=jobset),
                          "volumeMounts": mounts}
        if kind.gpus:
            main["resources"] = gpu_resources(kind)
        if not jobset:
            main["ports"] = [{"name": PYTORCHJOB_PORT_NAME, "containerPort": self.port}]
        spec: Manifest = {**self.pod_extras(kind), "containers": [main], "volumes": volumes}
        if jobset:
            spec["restartPolicy"] = "Never"
        return {"metadata": {"labels": self.labels()}, "spec": spec}


def gpu_resources(kind: HostKind) -> Manifest:
    """``kind``'s GPU request (a GPU is requested through its limit)."""
    return {"limits": {GPU_RESOURCE: kind.gpus}}


def config_map(pods: Pods, script: str, record: str, code_archive_b64: str) -> Manifest:
    """The start script, the run's record and the pushed code."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": pods.meta(pods.config_map),
            "data": {START_SCRIPT: script, RunLayout.RUN_RECORD: record},
            "binaryData": {CODE_ARCHIVE: code_archive_b64}}


def runs_claim(pods: Pods) -> Manifest:
    """The run-directory claim (every pod writes into it)."""
    spec: Manifest = {"accessModes": ["ReadWriteMany"],
                      "resources": {"requests": {"storage": pods.settings.runs_pvc_size}}}
    if pods.settings.storage_class:
        spec["storageClassName"] = pods.settings.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": pods.meta(pods.settings.runs_pvc), "spec": spec}


def pytorchjob(pods: Pods, kinds: tuple[HostKind, ...], hosts: int) -> Manifest:
    """A PyTorchJob: Master = the first host's kind (one pod), Worker = the others' kind."""
    master = kinds[0]
    worker = kinds[1] if len(kinds) > 1 else master

    def replica(kind: HostKind, replicas: int) -> Manifest:
        return {"replicas": replicas, "restartPolicy": "Never",
                "template": pods.pod_template(kind, "pytorch")}

    specs = {"Master": replica(master, 1)}
    if hosts > 1:
        specs["Worker"] = replica(worker, hosts - 1)
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": pods.meta(pods.job),
            "spec": {"nprocPerNode": str(master.nproc),
                     "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None"},
                     "pytorchReplicaSpecs": specs}}


def jobset(pods: Pods, kinds: tuple[HostKind, ...]) -> Manifest:
    """A JobSet: one replicated job per kind, one pod per job."""
    groups = [{"name": kind.name, "replicas": len(kind.places), "template": {"spec": {
        "parallelism": 1, "completions": 1, "backoffLimit": 0,
        "template": pods.pod_template(kind, "trainer", jobset=True)}}} for kind in kinds]
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": pods.meta(pods.job),
            "spec": {"failurePolicy": {"maxRestarts": 0},
                     "network": {"enableDNSHostnames": True}, "replicatedJobs": groups}}


def jobset_master(pods: Pods, kinds: tuple[HostKind, ...]) -> str:
    """The first pod's DNS name in a JobSet (``<job>-<group>-0-0.<job>``)."""
    return f"{pods.job}-{kinds[0].name}-0-0.{pods.job}"


def trainjob(pods: Pods, kind: HostKind) -> Manifest:
    """A TrainJob of one node group on the torchrun runtime; volumes and the node selector go
    in as a patch of the runtime's ``node`` job."""
    volumes, mounts = pods.volumes()
    trainer: Manifest = {"image": kind.image, "command": pods.command(), "env": pods.env(),
                         "numNodes": len(kind.places), "numProcPerNode": kind.nproc}
    if kind.gpus:
        trainer["resourcesPerNode"] = gpu_resources(kind)
    pod = {**pods.pod_extras(kind), "volumes": volumes,
           "containers": [{"name": "node", "volumeMounts": mounts}]}
    patch = {"manager": "corral", "trainingRuntimeSpec": {"template": {"spec": {
        "replicatedJobs": [{"name": "node", "template": {"spec": {"template": {
            "spec": pod}}}}]}}}}
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": pods.meta(pods.job),
            "spec": {"runtimeRef": {"name": TRAINJOB_RUNTIME}, "trainer": trainer,
                     "runtimePatches": [patch]}}
