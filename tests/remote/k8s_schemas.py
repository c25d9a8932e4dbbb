"""Validation of generated manifests (not a test module): the CRDs' own openAPIV3Schema, made
strict as ``kubectl apply --validate=strict`` is, plus the rules a schema cannot express, and
the built-in kinds against Kubernetes' schemas (``kubernetes-validate``, offline).

The CRDs are the published ones in ``shared/k8s/`` beside the repository (found by walking up
from this file); tests that need them skip when it is absent.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import pytest

CRD_FILES = {
    ("kubeflow.org/v1", "PyTorchJob"): "kubeflow.org_pytorchjobs.v1.9.4.yaml",
    ("jobset.x-k8s.io/v1alpha2", "JobSet"): "jobset.x-k8s.io_jobsets.v0.12.0.yaml",
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"): "trainer.kubeflow.org_trainjobs.v2.3.0.yaml",
}
BUILT_IN = ("ConfigMap", "PersistentVolumeClaim", "Service")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


def crd_dir() -> Path | None:
    """``shared/k8s`` beside the repository or any folder above this file, if there is one."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "k8s"
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    return None


def strict(schema: Any) -> Any:
    """Every object schema that lists properties rejects other keys, unless it keeps unknown
    fields or says what its other keys are (what strict field validation does)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The strict openAPIV3Schema of ``kind`` at ``api_version`` (skips without the CRDs)."""
    yaml = pytest.importorskip("yaml")
    folder = crd_dir()
    if folder is None:
        pytest.skip("no shared/k8s beside the repository (the CRD schemas)")
    crd = yaml.safe_load((folder / CRD_FILES[(api_version, kind)]).read_text())
    version = api_version.rsplit("/", 1)[1]
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    assert crd["spec"]["names"]["kind"] == kind
    return strict(copy.deepcopy(served["schema"]["openAPIV3Schema"]))


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """Problems of a custom resource against its CRD (metadata checked as the server does)."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = crd_schema(manifest["apiVersion"], manifest["kind"])
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(manifest)]
    meta = manifest["metadata"]
    if set(meta) - {"name", "namespace", "labels", "annotations"}:
        errors.append(f"metadata: unknown keys {sorted(meta)}")
    if not DNS_LABEL.match(meta["name"]) or not DNS_LABEL.match(meta["namespace"]):
        errors.append(f"metadata: bad name or namespace {meta}")
    return errors


def containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container spec anywhere in ``manifest``."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    found.extend(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(manifest)
    return found


def rule_errors(manifest: dict[str, Any]) -> list[str]:
    """What the admission webhooks and controllers enforce beyond the schema."""
    errors = []
    for container in containers(manifest):
        errors += [f"reserved {e['name']} in a container's env" for e in container.get("env", ())
                   if e["name"].startswith("PET_")]
    if manifest["kind"] == "TrainJob":
        errors += [f"trainJob env {e['name']} is reserved" for e in
                   manifest["spec"]["trainer"].get("env", ()) if e["name"].startswith("PET_")]
        for key in ("numNodes", "numProcPerNode"):
            value = manifest["spec"]["trainer"][key]
            if not isinstance(value, int) or isinstance(value, bool):
                errors.append(f"TrainJob {key} is not an integer: {value!r}")
    if manifest["kind"] == "PyTorchJob":
        specs = manifest["spec"]["pytorchReplicaSpecs"]
        if set(specs) - {"Master", "Worker"}:
            errors.append(f"PyTorchJob replica types {sorted(specs)}: only Master and Worker")
        if specs.get("Master", {}).get("replicas") != 1:
            errors.append("PyTorchJob Master replicas must be 1")
        errors += [f"{name}: the controller configures only a container named pytorch"
                   for name, spec in specs.items()
                   if "pytorch" not in [c["name"] for c in spec["template"]["spec"]["containers"]]]
    return errors


def built_in_errors(manifest: dict[str, Any]) -> list[str]:
    """Problems of a ConfigMap, claim or Service against Kubernetes' strict schemas."""
    validate = pytest.importorskip("kubernetes_validate")
    try:
        validate.validate(manifest, validate.latest_version(), strict=True)
    except validate.ValidationError as error:
        return [str(error).splitlines()[0]]
    return []


def all_errors(manifests: tuple[dict[str, Any], ...]) -> list[str]:
    """Every problem of every manifest, each prefixed with its kind."""
    errors = []
    for manifest in manifests:
        found = (built_in_errors(manifest) if manifest["kind"] in BUILT_IN
                 else schema_errors(manifest) + rule_errors(manifest))
        errors += [f"{manifest['kind']}: {e}" for e in found]
    return errors
