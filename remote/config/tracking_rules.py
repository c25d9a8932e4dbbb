"""Value rules for ``[tracking]`` (the experiment trackers corral logs a run to)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from remote.config.errors import Problems, quote

MLFLOW_SCHEMES = ("sqlite:///", "http://", "https://", "file://", "postgresql://", "mysql://",
                  "databricks")
"""Tracking URI prefixes MLflow's client understands; anything else must be a directory."""


def tracking_problems(values: Mapping[str, Any]) -> Problems:
    """Rules for ``[tracking]``."""
    out: Problems = []
    for key in ("mlflow", "experiment", "aim"):
        value = values.get(key)
        if isinstance(value, str) and (not value.strip() or "\n" in value):
            out.append((key, f"must be a non-empty line of text, got {quote(value)}; "
                             f"leave {key} out to log nothing there"))
    uri = values.get("mlflow")
    if isinstance(uri, str) and "://" in uri and not uri.startswith(MLFLOW_SCHEMES):
        out.append(("mlflow", f"{quote(uri)} is no MLflow tracking URI: use sqlite:///PATH, "
                              "a directory, or http(s)://HOST:PORT of a tracking server"))
    return out
