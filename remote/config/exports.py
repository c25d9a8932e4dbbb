"""``[kubernetes]`` and ``[tracking]``: where a run goes besides its hosts, written out as
Kubernetes manifests (``corral export k8s``) or sent to experiment trackers as it runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from remote.config.errors import check_section
from remote.config.k8s_rules import job_name_problem, object_name_problem, storage_size_problem
from remote.config.tracking_rules import tracking_problems
from remote.config.value_rules import key, key_problems, section_values


@dataclass(frozen=True, kw_only=True)
class KubernetesSection:
    """``[kubernetes]``: how ``corral export k8s`` writes the run as Kubernetes manifests
    (see docs/kubernetes.md); every name is a Kubernetes name (lower-case letters, digits,
    ``-``)."""

    namespace: str = field(default="default", metadata=key(rule=job_name_problem))
    """Namespace of every object written."""
    image: str | None = field(default=None, metadata=key(token=True))
    """Container image of the pods: Python with torch and the task's packages (corral's own
    code travels in a ConfigMap); needed unless every host sets its own ``image``."""
    job_name: str | None = field(default=None, metadata=key(rule=job_name_problem))
    """Name of the job and prefix of its other objects; default: ``[cluster] name``."""
    runs_pvc: str = field(default="corral-runs", metadata=key(rule=object_name_problem))
    """PersistentVolumeClaim holding the run directories, mounted in every pod."""
    runs_pvc_size: str = field(default="20Gi", metadata=key(rule=storage_size_problem))
    """Storage requested by the run-directory claim (when ``create_pvc``)."""
    create_pvc: bool = True
    """Write the run-directory claim with the job; ``false`` uses an existing ``runs_pvc``."""
    storage_class: str | None = field(default=None, metadata=key(rule=object_name_problem))
    """StorageClass of the run-directory claim (ReadWriteMany when pods share it across
    nodes); default: the cluster's default class."""
    data_pvc: str | None = field(default=None, metadata=key(rule=object_name_problem))
    """An existing claim with data or model files, mounted read-only at ``/corral/data``."""
    service_account: str | None = field(default=None, metadata=key(rule=object_name_problem))
    """Service account the pods run as; default: the namespace's default account."""
    image_pull_secret: str | None = field(default=None, metadata=key(rule=object_name_problem))
    """Secret with the registry credentials for a private ``image``."""

    def __post_init__(self) -> None:
        check_section("[kubernetes] ", key_problems(KubernetesSection, section_values(self)))


@dataclass(frozen=True, kw_only=True)
class TrackingSection:
    """``[tracking]``: the experiment trackers a run is logged to while corral follows it,
    from this machine's copy of its events (see docs/tracking.md); none by default."""

    mlflow: str | None = None
    """MLflow tracking URI: ``sqlite:///PATH`` (needs the ``mlflow`` extra), a directory, or
    ``http(s)://HOST:PORT`` of a tracking server."""
    experiment: str | None = None
    """MLflow experiment (Aim experiment) the runs go in; default: ``[cluster] name``."""
    aim: str | None = None
    """Path of an Aim repository (needs the ``aim`` extra, Python <= 3.12)."""
    log_model: bool = True
    """Log the final model as an artifact when it is on this machine."""

    def __post_init__(self) -> None:
        check_section("[tracking] ", tracking_problems(section_values(self)))

    @property
    def enabled(self) -> bool:
        """True when some tracker is configured."""
        return bool(self.mlflow or self.aim)
