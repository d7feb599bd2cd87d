"""The Kubernetes backend's configuration: a section of the settings, so it imports nothing of the backend.

The Job manifests built from it are :mod:`evolution.training.kubernetes_manifest`; keeping the configuration apart
lets every process read its settings without loading the training stack.
"""

from __future__ import annotations

import posixpath
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 63


class KubeModel(BaseModel):
    """A Kubernetes object fragment: snake_case here, camelCase on the wire."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")


class Toleration(KubeModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class KubernetesBackendConfig(BaseModel):
    """Where and how training Jobs run. Nothing here is a secret: cluster credentials come from the
    in-cluster service account or the kubeconfig file, never from this object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field(default="evolution-training", description="Namespace the Jobs are created in.")
    image: str = Field(
        default="controlled-evolution:latest",
        min_length=1,
        description="Image with this package installed; it runs python -m evolution.training.job_runner.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    trainer_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent",
        description="For tenants' trainer images: pinned by digest, so a cached copy is the same bytes.",
    )
    image_pull_secrets: list[str] = Field(default_factory=list, description="Names of pull Secrets.")
    python_executable: str = Field(default="python", min_length=1, description="The image's interpreter.")
    service_account: str = Field(
        default="evolution-training",
        description="A service account bound to no Role: the pod needs no API rights (its token is not mounted).",
    )
    work_volume_claim: str = Field(
        default="evolution-work",
        description="ReadWriteMany PVC shared by the worker and the training pods (see the kubernetes_manifest module docstring).",
    )
    work_mount_path: str = Field(
        default="/var/lib/evolution/work",
        description="Where both the worker and the pods mount the claim; every TrainingJob path lies under it.",
    )
    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "2Gi"
    memory_limit: str = Field(
        default="4Gi", description="Used when the TrainingJob sets no memory_limit_mb (which wins when set)."
    )
    gpus: int = Field(default=0, ge=0, description="GPUs per pod, requested as gpu_resource.")
    gpu_resource: str = "nvidia.com/gpu"
    tmp_size_limit: str = Field(default="1Gi", description="Size limit of the pod's /tmp emptyDir.")
    staged_input_size_limit: str = Field(
        default="20Gi",
        description="Size limit of the emptyDir an image trainer's input is staged into (its snapshot's size).",
    )
    stage_input_cpu: str = Field(default="500m", description="Request and limit of the input-staging step.")
    stage_input_memory: str = Field(
        default="256Mi", description="Request and limit of the input-staging step."
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    run_as_user: int = Field(default=10001, ge=1)
    run_as_group: int = Field(default=10001, ge=1)
    ttl_seconds_after_finished: int | None = Field(
        default=3600,
        ge=0,
        description="Kubernetes deletes a finished Job (and its pod, with the logs) after this.",
    )
    backoff_limit: int = Field(default=0, ge=0, description="Pod retries by Kubernetes; 0: Temporal retries.")
    termination_grace_period_s: int = Field(default=10, ge=0)
    extra_env: dict[str, str] = Field(
        default_factory=dict, description="Extra variables for the training container (never secrets)."
    )

    in_cluster: bool = Field(default=False, description="Use the worker pod's own service account.")
    kubeconfig: str | None = Field(
        default=None, description="kubeconfig file; None: $KUBECONFIG or ~/.kube/config."
    )
    context: str | None = Field(default=None, description="kubeconfig context; None: the current one.")
    api_url: str | None = Field(
        default=None, description="Talk to this API server URL without credentials (tests, kubectl proxy)."
    )
    request_timeout_s: float = Field(default=30.0, gt=0)
    poll_interval_s: float = Field(default=2.0, gt=0, description="How often the Job's status is read.")
    pod_check_interval_s: float = Field(
        default=15.0,
        gt=0,
        description="How often the pod is inspected (stuck image, log tail) while running.",
    )
    api_outage_tolerance_s: float = Field(
        default=300.0,
        gt=0,
        description="How long the API server may fail while a Job runs before the run fails with TrainingFailed.",
    )
    deadline_grace_s: float = Field(
        default=60.0,
        ge=0,
        description="If the cluster has not stopped the Job this long after its deadline, the backend deletes it.",
    )
    log_tail_chars: int = Field(default=4000, ge=100)
    log_tail_lines: int = Field(default=400, ge=1)

    @field_validator(
        "cpu_request",
        "cpu_limit",
        "memory_request",
        "memory_limit",
        "tmp_size_limit",
        "staged_input_size_limit",
        "stage_input_cpu",
        "stage_input_memory",
    )
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not QUANTITY.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)")
        return value

    @field_validator("namespace", "service_account", "work_volume_claim")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if len(value) > MAX_NAME or not DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a DNS-1123 label (lower-case alphanumerics and '-', <= 63)")
        return value

    @field_validator("work_mount_path")
    @classmethod
    def _mount_path(cls, value: str) -> str:
        normal = posixpath.normpath(value)
        if not value.startswith("/") or normal == "/":
            raise ValueError(f"work_mount_path must be an absolute directory other than /, got {value!r}")
        return normal
