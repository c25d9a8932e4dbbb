"""Reading a cluster.toml (``load_cluster``, ``parse_cluster``): TOML values -> typed values ->
rules -> the dataclasses of ``remote/config/cluster.py``.

Nothing is built until every problem in the document has been collected; then they are raised
together as one ``ConfigError``, each naming the file, the section and the key.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from remote.config import rules
from remote.config.cluster import (
    HEADERS,
    SECTIONS,
    ClusterConfig,
    ClusterSection,
    HostSection,
    RunSection,
    SshSection,
)
from remote.config.container import ContainerSection, container_problems
from remote.config.errors import (
    ConfigError,
    ConfigProblem,
    closest,
    file_error,
    file_order,
    host_where,
    quote,
)
from remote.config.errors import section_where as _where
from remote.config.exports import (
    KubernetesSection,
    NotifySection,
    TrackingSection,
    notify_problems,
)
from remote.config.toml import field_hints, toml_type, typed_fields
from remote.config.tracking_rules import tracking_problems
from remote.config.value_rules import key_problems

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


class Reader:
    """Collects every problem of one document, then builds the config if there were none."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[ConfigProblem] = []

    def add(self, where: str, message: str) -> None:
        self.problems.append(ConfigProblem(path=self.path, where=where, message=message))

    def build(self, document: Mapping[str, Any]) -> ClusterConfig:
        self._unknown_sections(document)
        cluster = self._table(document, "cluster", lambda key: _where("cluster", key))
        hosts = self._hosts(document)
        run = self._table(document, "run", lambda key: _where("run", key))
        ssh = self._table(document, "ssh", lambda key: _where("ssh", key))
        k8s = self._table(document, "kubernetes", lambda key: _where("kubernetes", key))
        tracking = self._table(document, "tracking", lambda key: _where("tracking", key))
        notify = self._table(document, "notify", lambda key: _where("notify", key))
        cluster_rules = functools.partial(key_problems, ClusterSection)
        for name, values, check in (("cluster", cluster, cluster_rules),
                                    ("run", run, functools.partial(rules.run_problems,
                                                                   RunSection)),
                                    ("ssh", ssh, functools.partial(key_problems, SshSection)),
                                    ("kubernetes", k8s, functools.partial(
                                        key_problems, KubernetesSection)),
                                    ("tracking", tracking, tracking_problems),
                                    ("notify", notify, notify_problems)):
            if values is not None:
                for key, message in check(values):
                    self.add(_where(name, key), message)
        for index, host in enumerate(hosts):
            for key, message in rules.host_problems(HostSection, host):
                self.add(host_where(index, host.get("name"), key), message)
            self._identity_file(index, host)
        for where, message in rules.cross_problems(cluster or {}, hosts, run or {}):
            self.add(where, message)
        if self.problems or cluster is None or not hosts:
            self.problems.sort(key=file_order)  # stable: within a table, the order found
            raise ConfigError(self.problems, title=f"{self.path.name} is invalid")
        run_section = RunSection(**(run or {}))
        raw_run = document.get("run")
        object.__setattr__(run_section, "keys_set",
                           frozenset(raw_run) if isinstance(raw_run, dict) else frozenset())
        return ClusterConfig(
            path=self.path, cluster=ClusterSection(**cluster),
            hosts=tuple(HostSection(**host) for host in hosts),
            run=run_section, ssh=SshSection(**(ssh or {})),
            kubernetes=KubernetesSection(**(k8s or {})),
            tracking=TrackingSection(**(tracking or {})),
            notify=NotifySection(**(notify or {})),
        )

    def _unknown_sections(self, document: Mapping[str, Any]) -> None:
        for key, value in document.items():
            if key in SECTIONS:
                continue
            owner = next((s for s, cls in SECTIONS.items() if key in field_hints(cls)), None)
            if owner is not None and not isinstance(value, dict | list):
                self.add(key, f"unknown top-level key; keys go in a section: did you mean to "
                              f"put it under {HEADERS[owner]}?")
                continue
            match = closest(key, SECTIONS)
            hint = f"; did you mean {HEADERS[match]}?" if match else ""
            self.add(f"[{key}]", f"unknown section (sections: {', '.join(HEADERS.values())})"
                                 f"{hint}")

    def _table(self, document: Mapping[str, Any], name: str,
               where: Callable[[str], str]) -> dict[str, Any] | None:
        """A ``[section]``'s typed values; None if it is missing (only [cluster] must exist)."""
        raw = document.get(name)
        if raw is None:
            if name != "cluster":
                return {}
            self.add("[cluster]", "missing section; add [cluster] with name and master")
            return None
        if not isinstance(raw, dict):
            self.add(f"[{name}]", f"must be a table ({HEADERS[name]}), got {toml_type(raw)}")
            return None if name == "cluster" else {}
        return self._fields(SECTIONS[name], raw, where)

    def _hosts(self, document: Mapping[str, Any]) -> list[dict[str, Any]]:
        raw = document.get("hosts")
        if raw is None or raw == []:
            self.add("[[hosts]]", 'no hosts; add one [[hosts]] entry per machine (address = '
                                  '"local" for this one)')
            return []
        if not isinstance(raw, list):
            self.add("[[hosts]]", f"must be an array of tables (a [[hosts]] header per host), "
                                  f"got {toml_type(raw)}")
            return []
        hosts = []
        for index, entry in enumerate(raw):
            if not isinstance(entry, dict):
                self.add(host_where(index, None), f"must be a table, got {toml_type(entry)}")
                continue
            where = functools.partial(host_where, index, entry.get("name"))
            container = entry.get("container")
            host = self._fields(HostSection, {k: v for k, v in entry.items()
                                              if k != "container"}, where)
            if container is not None:
                host["container"] = self._container(container, where)
            hosts.append(host)
        return hosts

    def _container(self, raw: object, where: Callable[[str], str]) -> ContainerSection | None:
        """A host's ``[hosts.container]`` table, built when it has no problem."""
        if not isinstance(raw, dict):
            self.add(where("container"), f"must be a table ([hosts.container]), got "
                                         f"{toml_type(raw)}")
            return None
        before = len(self.problems)
        values = typed_fields(ContainerSection, raw,
                              lambda key, msg: self.add(where(f"container.{key}"), msg))
        for key, message in container_problems(values):
            self.add(where(f"container.{key}"), message)
        return ContainerSection(**values) if len(self.problems) == before else None

    def _fields(self, cls: type, raw: Mapping[str, Any],
                where: Callable[[str], str]) -> dict[str, Any]:
        return typed_fields(cls, raw, lambda key, msg: self.add(where(key), msg))

    def _identity_file(self, index: int, host: dict[str, Any]) -> None:
        """Resolve ``identity_file`` (``~``, relative to cluster.toml) and check it is readable."""
        given = host.get("identity_file")
        if not isinstance(given, str) or not given.strip() or host.get("address") == "local":
            return
        resolved = self.path.parent / Path(given).expanduser()
        where = host_where(index, host.get("name"), "identity_file")
        if not resolved.exists():
            self.add(where, f"{quote(given)} does not exist (looked at {resolved})")
        elif not resolved.is_file():
            self.add(where, f"{quote(given)} is not a file ({resolved})")
        elif not os.access(resolved, os.R_OK):
            self.add(where, f"{quote(given)} is not readable by this user ({resolved})")
        else:
            host["identity_file"] = str(resolved.absolute())


CLUSTER_TOML_MAX_BYTES = 1 << 20
"""The largest cluster.toml read (1 MiB, thousands of hosts): a device (``/dev/zero``), an
endless pipe or a wrong file is refused after that many bytes, not read for ever."""


def read_limited(path: Path, limit: int) -> bytes | None:
    """The bytes of ``path`` when it holds at most ``limit`` of them; None when it holds more
    (never more than ``limit + 1`` bytes read, whatever it is). OSError as ``open`` raises."""
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    return None if len(data) > limit else data


def load_cluster(path: str | os.PathLike[str]) -> ClusterConfig:
    """Read and check the cluster.toml at ``path``.

    Raises ``ConfigError`` (exit code 2) for a missing or unreadable file, invalid TOML, or
    any number of problems in its contents, every one of them named in the message.
    """
    path = Path(path)
    try:
        data = read_limited(path, CLUSTER_TOML_MAX_BYTES)
    except FileNotFoundError:
        raise file_error(path, "no such file; start from the repository's cluster.toml, or "
                                "write one here with `corral init` (the local demo) or "
                                "`corral init --hosts ALIAS,...` (your ssh_config hosts) or "
                                "`corral init --script train.py` (your own script); "
                                "keys are described in docs/cluster-toml.md") from None
    except OSError as error:
        raise file_error(path, f"cannot be read: {error.strerror or error}") from None
    if data is None:
        raise file_error(path, f"holds more than {CLUSTER_TOML_MAX_BYTES >> 20} MiB: not a "
                                "cluster.toml (a device, a stream or another file?); give the "
                                "path of your cluster.toml", title=f"{path.name} is too large")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise file_error(path, f"is not UTF-8 text (bad byte at offset {error.start})",
                          title=f"{path.name} is invalid") from None
    return parse_cluster(text, path=path)


def parse_cluster(text: str, *, path: str | os.PathLike[str]) -> ClusterConfig:
    """Check the TOML ``text`` of a cluster.toml; ``path`` is named in errors and kept as
    ``ClusterConfig.path`` (relative identity files are resolved against its directory)."""
    path = Path(path)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise file_error(path, f"invalid TOML: {error}", title=f"{path.name} is invalid") \
            from None
    except RecursionError:
        raise file_error(path, "invalid TOML: arrays or tables nested too deeply",
                          title=f"{path.name} is invalid") from None
    return Reader(path).build(document)
