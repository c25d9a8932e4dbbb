"""``corral export k8s``: cluster.toml -> the manifests of one run on Kubernetes.

The format (``remote.k8s.kinds.choose_format``) decides the job object; every export also
holds the ConfigMap with the pods' start script and corral's pushed code, and (unless
``[kubernetes] create_pvc = false``) the claim the run directories live on.
"""

from __future__ import annotations

import base64
import errno
import gzip
import json
import os
import re
import secrets
import shlex
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from remote.config.cluster import ClusterConfig
from remote.config.task_code import UserCode, user_code
from remote.hosts.data_tree import data_line
from remote.hosts.push import build_bundle
from remote.k8s import manifests
from remote.k8s.formats import K8sFormat
from remote.k8s.kinds import (
    ExportError,
    HostKind,
    check_group_names,
    choose_format,
    host_kinds,
    job_name,
    pod_config,
    pod_plan,
)
from remote.k8s.pod_command import (
    RUN_RECORD_RUNNING,
    RUN_RECORD_STARTED,
    PodStart,
    pod_launch,
    start_script,
)
from remote.k8s.yaml_text import dump, dump_all
from remote.records.runs import RunInfo, local_run_dir, new_run_id

DEFAULT_PORT = 29500
"""The rendezvous port when ``[cluster] rendezvous_port = "auto"`` (a pod has it to itself)."""
CONFIG_MAP_LIMIT = 1024 * 1024
"""The most a ConfigMap may hold."""


@dataclass(frozen=True, kw_only=True)
class K8sExport:
    """The manifests of one run."""

    format: K8sFormat
    run_id: str
    """The run id the pods use (their run directory is ``runs/<run_id>`` on the claim)."""
    job: str
    namespace: str
    objects: tuple[manifests.Manifest, ...]
    """In the order to apply them."""
    user: UserCode | None
    """The run's user code, located once for the export (None for a built-in task)."""

    def yaml(self) -> str:
        """Every object as one YAML stream."""
        return dump_all(self.objects)

    def files(self) -> dict[str, str]:
        """One YAML file per object, numbered in apply order."""
        return {f"{index:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml": dump(obj)
                for index, obj in enumerate(self.objects, start=1)}


def code_archive(config: ClusterConfig, user: UserCode | None) -> tuple[str, str]:
    """The pushed packages as ``corral run`` pushes them (``user``: the run's user code):
    their digest and a base64 gzip."""
    bundle = build_bundle(user_folder=user.folder if user is not None else None,
                          with_data=config.run.script is None)  # as corral run's
    packed = base64.b64encode(gzip.compress(bundle.tar, mtime=0)).decode("ascii")
    if len(packed) > CONFIG_MAP_LIMIT // 2:
        raise ExportError(f"the pushed code is {len(packed) // 1024} KiB encoded, too much for a "
                          "ConfigMap; make [run] code a smaller folder")
    return bundle.digest, packed


def run_record(config: ClusterConfig, run_id: str, digest: str, job: str) -> str:
    """``run.json`` as ``corral run`` records it, for the first pod to write into the run
    directory (its start time and outcome filled in there)."""
    info = RunInfo(run_id=run_id, cluster=config.cluster.name, state="running", started=0.0,
                   hosts=tuple(h.name for h in config.hosts), config_path=str(config.path),
                   code_digest=digest, name=config.run.name or "",
                   detail=f"on Kubernetes: {job} in namespace {config.kubernetes.namespace}")
    text = json.dumps(asdict(info), indent=1) + "\n"
    if text.count(RUN_RECORD_STARTED) != 1 or text.count(RUN_RECORD_RUNNING) != 1:
        raise AssertionError(f"run.json is not written as the start script expects: {text}")
    return text


def job_and_start(chosen: K8sFormat, pods: manifests.Pods, kinds: tuple[HostKind, ...]
                  ) -> tuple[manifests.Manifest, PodStart]:
    """The job object of the format and where its pods learn their index and master."""
    if chosen == "pytorchjob":
        hosts = sum(len(kind.places) for kind in kinds)
        return (manifests.pytorchjob(pods, kinds, hosts),
                PodStart(node="RANK", endpoint='"$MASTER_ADDR:$MASTER_PORT"'))
    if chosen == "jobset":
        master = f"{manifests.jobset_master(pods, kinds)}:{pods.port}"
        return (manifests.jobset(pods, kinds),
                PodStart(node=manifests.NODE_ENV, endpoint=shlex.quote(master)))
    return (manifests.trainjob(pods, kinds[0]),
            PodStart(node="PET_NODE_RANK", endpoint='"$PET_MASTER_ADDR:$PET_MASTER_PORT"'))


def export_manifests(config: ClusterConfig, requested: str | None = None, *,
                     run_id: str | None = None) -> K8sExport:
    """The manifests for ``config`` in the ``requested`` format (None: chosen from the
    hosts). Raises ``ExportError`` naming the key and the fix for what cannot be exported."""
    pods_config = pod_config(config)
    plan = pod_plan(pods_config)
    kinds = host_kinds(pods_config, plan)
    chosen = choose_format(requested, kinds, plan)
    job = job_name(config)
    if chosen == "jobset":
        check_group_names(job, kinds)
    run_id = run_id or new_run_id(config.cluster.name)
    setting = config.cluster.rendezvous_port
    pods = manifests.Pods(settings=config.kubernetes, job=job, run_id=run_id,
                          port=DEFAULT_PORT if setting == "auto" else int(setting),
                          config_map=f"{job}-code")
    user = user_code(config.run, config.path.parent)
    digest, packed = code_archive(config, user)
    launch = pod_launch(pods_config, plan, run_id=run_id, digest=digest, port=pods.port,
                        user=user)
    job_object, start = job_and_start(chosen, pods, kinds)
    order = tuple(place for kind in kinds for place in kind.places)
    script = start_script(pods_config, launch, order, start)
    record = run_record(config, run_id, digest, f"{chosen} {job}")
    objects = [manifests.config_map(pods, script, record, packed)]
    if config.kubernetes.create_pvc:
        objects.append(manifests.runs_claim(pods))
    objects.append(job_object)
    return K8sExport(format=chosen, run_id=run_id, job=job,
                     namespace=config.kubernetes.namespace, objects=tuple(objects), user=user)


EXPORT_FILE_RE = re.compile(r"^[0-9]{2}-[a-z0-9]+-[a-z0-9.-]+\.yaml$")
"""The name of a file an export writes (``K8sExport.files``): an ``--out`` folder holding
anything else is not replaced (the swap would remove it)."""


def write_export(export: K8sExport, out: Path) -> list[Path]:
    """Write one file per object into the folder ``out``, replacing the previous export there
    whole; the paths written.

    The files are written (and synced) into a new folder beside ``out``, which then takes
    ``out``'s place (the previous folder renamed aside, then removed): ``out`` never holds a
    truncated file or a mix of two exports (a job from one, its code from the other, or both
    jobs after a change of format), and any failure leaves it as it was and raises
    ``ExportError`` naming it. A folder that holds anything else is refused, untouched."""
    files = export.files()
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder: give a folder (made if "
                          "missing), or leave out --out for one YAML stream on stdout")
    _check_replaceable(out)
    where = Path(os.path.abspath(out))
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        staged = where.parent / f".{where.name}.new-{secrets.token_hex(4)}"
        staged.mkdir()
    except OSError as error:
        raise unwritable(out, error) from None
    try:
        for name, text in files.items():
            with open(staged / name, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        _swap_in(staged, where)
    except OSError as error:
        raise unwritable(out, error) from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return [out / name for name in files]


def _check_replaceable(out: Path) -> None:
    """Refuse an existing ``out`` that the swap must not remove or may not change: one
    holding anything but an earlier export's files, or one this user cannot write."""
    if not out.is_dir():
        return
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()
                     if not (EXPORT_FILE_RE.match(p.name) and p.is_file()))
    if foreign:
        named = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if foreign[5:] else "")
        raise ExportError(f"--out {out} holds {named}, which no export wrote: an export "
                          "replaces its folder whole; give a new or empty folder, or one only "
                          "an earlier export wrote")
    if not os.access(out, os.W_OK):
        raise unwritable(out, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))


def _swap_in(staged: Path, out: Path) -> None:
    """Put the folder ``staged`` in ``out``'s place, the previous ``out`` removed; on a
    failure ``out`` is as it was."""
    if not out.exists():
        os.rename(staged, out)
        return
    aside = staged.with_name(staged.name.replace(".new-", ".old-", 1))
    os.rename(out, aside)
    try:
        os.rename(staged, out)
    except OSError:
        os.rename(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def unwritable(out: Path, error: OSError) -> ExportError:
    """The one line for an ``--out`` folder that cannot be made or written."""
    reason = error.strerror or type(error).__name__
    return ExportError(f"cannot write into --out {out} ({reason.lower()}): give a folder you "
                       "can write to, or leave out --out for one YAML stream on stdout")


COPY_POD = "corral-copy"
"""A throw-away pod that mounts the run-directory claim for ``kubectl cp`` (the job's own pods
have exited by the time a run is copied back, and ``kubectl cp`` needs a running one)."""


def _data_note(config: ClusterConfig, user: UserCode | None) -> list[str]:
    """A script's data does not ride in the manifests (no data sync to a pod): what it is,
    and what the pods need, first (docs/data.md)."""
    if config.run.script is None or user is None:
        return []
    line = data_line(user.folder, config.run.data, config.path.parent)
    if line is None or config.run.data is False:
        return []
    return [f"# first, the script's {line}: not in the manifests; mount it in the pods at the "
            "same path under their working directory (docs/data.md)"]


def next_steps(config: ClusterConfig, export: K8sExport, source: str) -> list[str]:
    """Apply, follow, copy back (to ``<run_root>/<run_id>``, where ``corral report`` looks)."""
    ns = f"-n {shlex.quote(export.namespace)}"
    claim = config.kubernetes.runs_pvc
    overrides = json.dumps({"spec": {
        "volumes": [{"name": "runs", "persistentVolumeClaim": {"claimName": claim}}],
        "containers": [{"name": COPY_POD, "image": "busybox", "command": ["sleep", "3600"],
                        "volumeMounts": [{"name": "runs", "mountPath": "/runs"}]}]}},
        separators=(",", ":"))
    local = shlex.quote(str(local_run_dir(config, export.run_id)))
    return [*_data_note(config, export.user),
        f"kubectl apply -f {shlex.quote(source)}",
        f"kubectl {ns} logs -f -l {manifests.RUN_ID_LABEL}={export.run_id} "
        "--prefix --max-log-requests 64",
        f"kubectl {ns} run {COPY_POD} --image=busybox --restart=Never "
        f"--overrides={shlex.quote(overrides)}",
        f"kubectl {ns} wait --for=condition=Ready pod/{COPY_POD}",
        f"kubectl {ns} cp {COPY_POD}:/runs/{export.run_id} {local}",
        f"kubectl {ns} delete pod {COPY_POD}",
    ]
