"""Kubernetes names, labels and sizes, as the API server accepts them: the rules of cluster.toml's
``[kubernetes]`` and of the names ``corral export k8s`` derives (``remote/k8s/``).
"""

from __future__ import annotations

import re

from remote.config.errors import quote

K8S_LABEL_RE = re.compile(r"[a-z][-a-z0-9]{0,38}[a-z0-9]\Z|[a-z]\Z")
"""A job name or namespace: a DNS label starting with a letter, short enough that a JobSet pod's
hostname ``<job>-<group>-<i>-<j>`` stays within 63 characters."""
K8S_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
"""A claim, secret, service account or storage class name (a DNS subdomain)."""
LABEL_PART_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]\Z")
"""A label value, and a label key's name part."""
QUANTITY_RE = re.compile(r"[0-9]+(\.[0-9]+)?([KMGTPE]i?|k|m)?\Z")
"""A storage size like ``20Gi``."""


def k8s_name_problem(value: str, *, label: bool) -> str | None:
    """Why ``value`` is no Kubernetes name (``label``: a job name or namespace), or None."""
    if (K8S_LABEL_RE if label else K8S_NAME_RE).match(value) and len(value) <= 253:
        return None
    fixed = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")[:40].strip("-") or "corral"
    first = "a letter" if label else "a letter or digit"
    size = ", at most 40 characters" if label else ""
    return (f"is not a Kubernetes name (lower-case letters, digits and '-', starting with "
            f"{first}{size}), got {quote(value)}; use e.g. {quote(fixed)}")


def job_name_problem(value: str) -> str | None:
    """``[kubernetes] namespace``'s and ``job_name``'s rule: a short DNS label."""
    return k8s_name_problem(value, label=True)


def object_name_problem(value: str) -> str | None:
    """The rule of ``[kubernetes]``'s claim, class, account and secret names: a DNS subdomain."""
    return k8s_name_problem(value, label=False)


def storage_size_problem(value: str) -> str | None:
    """``[kubernetes] runs_pvc_size``'s rule: a Kubernetes quantity like ``20Gi``."""
    if QUANTITY_RE.match(value):
        return None
    return f"is not a storage size like \"20Gi\", got {quote(value)}"


def label_problem(key: str, value: str) -> str | None:
    """Why ``key = value`` is no node label (``prefix/name = value``), or None."""
    prefix, _, name = key.rpartition("/")
    if (prefix and not K8S_NAME_RE.match(prefix)) or not LABEL_PART_RE.match(name):
        return f"{quote(key)} is not a label key (like \"nvidia.com/gpu.product\")"
    if value and not LABEL_PART_RE.match(value):
        return f"{quote(value)} is not a label value (letters, digits, '-', '_', '.')"
    return None
