"""``[kubernetes]`` and ``[tracking]``: where a run goes besides its hosts, written out as
Kubernetes manifests (``corral export k8s``) or sent to experiment trackers as it runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from remote.config.errors import Problems, check_section, quote
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


NOTIFY_EVENTS = ("started", "failed", "finished", "stopped", "benched", "rejoined",
                 "joined", "left", "checkpoint", "slow", "stuck")
"""What ``[notify] events`` may name: the run started training, failed, finished, was stopped;
a host sat out of the exchange (benched) or came back (rejoined); a host joined the running
run or its join was refused (joined), a host left it (left: asked, or lost and the survivors
went on); a checkpoint was written;
throughput fell by ``slow_percent`` for ``slow_minutes`` (slow); a start stuck before its first
step (stuck)."""

@dataclass(frozen=True, kw_only=True)
class NotifySection:
    """``[notify]``: who is told when a run's moments come, sent from this machine while
    corral follows the run (``corral run``, ``corral attach`` or the console), never from the
    ranks (see docs/console.md); nobody by default."""

    urls: tuple[str, ...] = ()
    """Apprise URLs (``slack://``, ``discord://``, ``ntfy://``, ``matrix://``, ``mailto://``,
    ``json://`` ...; needs the ``notify`` extra). A secret is written ``${NAME}``: the value
    of this machine's environment variable ``NAME``, read when a notice is sent and never
    written to ``run.json``, a log or a command line."""
    events: tuple[str, ...] = ("failed", "finished", "stopped", "stuck")
    """Which moments are sent: any of ``started``, ``failed``, ``finished``, ``stopped``,
    ``benched``, ``rejoined``, ``joined``, ``left``, ``checkpoint``, ``slow``, ``stuck``."""
    bell: bool = False
    """Also ring the terminal's bell on each notice."""
    slow_percent: float = field(default=30.0, metadata=key(above=0.0, at_most=100.0))
    """``slow``: the cluster's samples/s fell by more than this percentage of its best ..."""
    slow_minutes: float = field(default=5.0, metadata=key(above=0.0, at_most=1440.0))
    """... and stayed there for this many minutes."""
    bench_minutes: float = field(default=10.0, metadata=key(above=0.0, at_most=1440.0))
    """``benched``/``rejoined``: at most one such notice per host in this many minutes (a
    host the balancer benches and re-probes flaps seconds apart)."""
    timeout_s: float = field(default=10.0, metadata=key(above=0.0, at_most=300.0))
    """Longest a notice may take to send; a slower or failing receiver is named once in the
    run's log and never holds the run up."""

    def __post_init__(self) -> None:
        check_section("[notify] ", notify_problems(section_values(self)))

    @property
    def enabled(self) -> bool:
        """True when some notice would be sent or rung."""
        return bool(self.urls or self.bell)


def notify_problems(values: Mapping[str, Any]) -> Problems:
    """Rules for ``[notify]``: its keys' bounds, every URL a line with a scheme."""
    out: Problems = key_problems(NotifySection, values)
    for i, url in enumerate(values.get("urls") or ()):
        if isinstance(url, str) and ("://" not in url or "\n" in url):
            out.append((f"urls[{i}]", "is no apprise URL: write it as SCHEME://..., e.g. "
                                      "ntfy://TOPIC or json://HOST:PORT"))
    for i, name in enumerate(values.get("events") or ()):
        if name not in NOTIFY_EVENTS:
            out.append((f"events[{i}]", f"unknown event {quote(str(name))}: use any of "
                                        f"{', '.join(NOTIFY_EVENTS)}"))
    return out
