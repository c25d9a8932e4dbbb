"""The job objects ``corral export k8s`` can write (a module of its own, free of imports, so
that ``remote.api`` names them without loading the export's layers)."""

from __future__ import annotations

from typing import Literal, get_args

K8sFormat = Literal["pytorchjob", "jobset", "trainjob"]
"""The job objects ``corral export k8s`` writes: Kubeflow's PyTorchJob (kubeflow.org/v1),
a JobSet (jobset.x-k8s.io/v1alpha2), Kubeflow Trainer's TrainJob (trainer.kubeflow.org/v1alpha1)."""
K8S_FORMATS: tuple[str, ...] = get_args(K8sFormat)
