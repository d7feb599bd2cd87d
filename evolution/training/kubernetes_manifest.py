"""Typed batch/v1 Job manifests for training runs (the backend's configuration: :mod:`.kubernetes_config`).

One :class:`~evolution.training.compute.TrainingJob` of the built-in trainer becomes one Job whose single pod runs
the same ``python -m evolution.training.job_runner <output_dir>/job.json`` as the local backend's child.

The shared work volume. The worker writes the job's dataset and ``job.json`` and later reads ``result.json`` and
the model files; the pod runs elsewhere. Both therefore mount the same ReadWriteMany PersistentVolumeClaim
(``work_volume_claim``) at the same path (``work_mount_path``), and every path in the TrainingJob must lie under
it (the worker's training work directory must be that mount). The pod mounts only the job's own directory of the
claim (the deepest directory holding both the dataset and the output directory, as a ``subPath``) at the very
path the worker uses, so the paths inside job.json mean the same file on both sides and a training pod never
sees another job's or another tenant's files. The pod runs as ``run_as_user``/``run_as_group`` (``fsGroup`` too):
run the worker with the same ids, so each side can read what the other wrote on the shared claim.

The pod has no API rights (a service account without bindings, and no token mounted), runs as a non-root user
with a read-only root file system (``/tmp`` is a size-limited emptyDir), no capabilities and no privilege
escalation. Kubernetes does not retry it (``backoffLimit`` 0: Temporal owns retries) and stops it at
``activeDeadlineSeconds``, the job's timeout.

An image trainer's Job is built by :mod:`evolution.training.kubernetes_image_job` from the parts defined here.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from evolution.errors import InvalidInput
from evolution.training.compute import JOB_FILE, RUNNER_MODULE, THREAD_CAPS, TrainingJob
from evolution.training.kubernetes_config import (
    MAX_NAME,
    KubeModel,
    KubernetesBackendConfig,
    Toleration,
)
from evolution.training.kubernetes_labels import (
    MODEL_LABEL,
    TENANT_LABEL,
    TENANT_TRAINER_POD_LABELS,
    TRAINING_POD_LABELS,
)

CONTAINER_NAME = "train"  # the built-in runner's container, and the tenant's: the one whose log is the run's
JOB_ID_ANNOTATION = "evolution.io/job-id"
JOB_DIGEST_ANNOTATION = "evolution.io/job-digest"
WORK_VOLUME = "work"
TMP_VOLUME = "tmp"
TMP_PATH = "/tmp"


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class ObjectMeta(KubeModel):
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)


class TemplateMeta(KubeModel):
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)


class EnvVar(KubeModel):
    name: str
    value: str


class ResourceRequirements(KubeModel):
    requests: dict[str, str]
    limits: dict[str, str]


class VolumeMount(KubeModel):
    name: str
    mount_path: str
    sub_path: str | None = None
    read_only: bool = False


class Capabilities(KubeModel):
    drop: list[str]


class SecurityContext(KubeModel):
    allow_privilege_escalation: bool
    privileged: bool
    read_only_root_filesystem: bool
    run_as_non_root: bool
    capabilities: Capabilities


class SeccompProfile(KubeModel):
    type: Literal["RuntimeDefault"] = "RuntimeDefault"


class PodSecurityContext(KubeModel):
    run_as_non_root: bool
    run_as_user: int
    run_as_group: int
    fs_group: int
    seccomp_profile: SeccompProfile


class Container(KubeModel):
    name: str
    image: str
    image_pull_policy: str
    command: list[str] | None = None  # None: the image's entrypoint
    args: list[str] | None = None
    working_dir: str | None = None  # None: the image's working directory
    env: list[EnvVar]
    resources: ResourceRequirements
    volume_mounts: list[VolumeMount]
    security_context: SecurityContext


class PersistentVolumeClaimSource(KubeModel):
    claim_name: str


class EmptyDirSource(KubeModel):
    size_limit: str


class Volume(KubeModel):
    name: str
    persistent_volume_claim: PersistentVolumeClaimSource | None = None
    empty_dir: EmptyDirSource | None = None


class LocalObjectReference(KubeModel):
    name: str


class PodSpec(KubeModel):
    restart_policy: Literal["Never"] = "Never"
    service_account_name: str
    automount_service_account_token: Literal[False] = False
    enable_service_links: bool = False
    termination_grace_period_seconds: int
    security_context: PodSecurityContext
    init_containers: list[Container] | None = None
    containers: list[Container]
    volumes: list[Volume]
    image_pull_secrets: list[LocalObjectReference] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None


class PodTemplateSpec(KubeModel):
    metadata: TemplateMeta
    spec: PodSpec


class JobSpec(KubeModel):
    backoff_limit: int
    active_deadline_seconds: int
    ttl_seconds_after_finished: int | None = None
    completions: int = 1
    parallelism: int = 1
    template: PodTemplateSpec


class Job(KubeModel):
    api_version: Literal["batch/v1"] = "batch/v1"
    kind: Literal["Job"] = "Job"
    metadata: ObjectMeta
    spec: JobSpec

    def to_manifest(self) -> dict[str, Any]:
        """The JSON object the API server receives."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def job_name(job_id: str) -> str:
    """A DNS-1123 label unique to ``job_id``: readable prefix, and a digest so that distinct ids never collide."""
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "-", job_id.lower()).strip("-")
    room = MAX_NAME - len("train--") - len(digest)
    slug = slug[:room].rstrip("-")
    return f"train-{slug}-{digest}" if slug else f"train-{digest}"


def label_value(value: str) -> str:
    """``value`` itself when it is a valid label value, else a readable, distinct, valid stand-in."""
    if len(value) <= MAX_NAME and _LABEL_VALUE.match(value):
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)
    slug = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", slug)[: MAX_NAME - len(digest) - 1]
    slug = re.sub(r"[^A-Za-z0-9]+$", "", slug)
    return f"{slug}-{digest}" if slug else digest


def job_digest(job: TrainingJob, input_digests: Mapping[str, str] | None = None) -> str:
    """sha256 of the job's canonical JSON: a retry that finds a Job by name adopts it only if this matches.

    An image trainer's input digests are bound in as well, so a retry over other data never adopts an older Job.
    """
    text = job.model_dump_json()
    if input_digests is not None:
        text += "\n" + json.dumps(dict(input_digests), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def job_labels(job: TrainingJob) -> dict[str, str]:
    """The labels the NetworkPolicies select on (which policy depends on whose code runs), tenant and model."""
    fixed = TRAINING_POD_LABELS if job.contract is None else TENANT_TRAINER_POD_LABELS
    return {
        **fixed,
        TENANT_LABEL: label_value(job.tenant),
        MODEL_LABEL: label_value(job.model_name),
    }


def training_env(config: KubernetesBackendConfig) -> list[EnvVar]:
    """What the local backend's child gets, minus the host's variables (the image brings PATH)."""
    env = dict(THREAD_CAPS)
    env.update(
        {
            "PYTHONHASHSEED": "0",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": TMP_PATH,
            "TMPDIR": TMP_PATH,
        }
    )
    env.update(config.extra_env)
    return [EnvVar(name=name, value=value) for name, value in sorted(env.items())]


def job_directory(job: TrainingJob, config: KubernetesBackendConfig) -> str:
    """The deepest directory holding the dataset and the output directory; it must lie under the mount."""
    dataset = on_work_volume(job.job_id, "dataset_path", job.dataset_path, config)
    output = on_work_volume(job.job_id, "output_dir", job.output_dir, config)
    return posixpath.commonpath([posixpath.dirname(dataset), output])


def on_work_volume(job_id: str, field: str, value: str, config: KubernetesBackendConfig) -> str:
    """``value`` normalised; InvalidInput unless it is an absolute path strictly under the work mount."""
    if not value.startswith("/"):
        raise InvalidInput(f"training job {job_id!r}: {field} {value!r} must be an absolute path")
    normal = posixpath.normpath(value)
    if not normal.startswith(config.work_mount_path + "/"):
        raise InvalidInput(
            f"training job {job_id!r}: {field} {value!r} is outside the shared work volume mounted at "
            f"{config.work_mount_path!r}; the training pod could not see it"
        )
    return normal


def resources(job: TrainingJob, config: KubernetesBackendConfig) -> ResourceRequirements:
    memory_limit = f"{job.memory_limit_mb}Mi" if job.memory_limit_mb is not None else config.memory_limit
    memory_request = config.memory_request
    if _bytes(memory_request) > _bytes(memory_limit):
        memory_request = memory_limit  # a request above the limit is invalid; the job's limit wins
    requests = {"cpu": config.cpu_request, "memory": memory_request}
    limits = {"cpu": config.cpu_limit, "memory": memory_limit}
    if config.gpus > 0:
        requests[config.gpu_resource] = str(config.gpus)
        limits[config.gpu_resource] = str(config.gpus)
    return ResourceRequirements(requests=requests, limits=limits)


def build_job(job: TrainingJob, config: KubernetesBackendConfig) -> Job:
    """The built-in trainer's Job for ``job``, whose paths must be absolute and under ``config.work_mount_path``."""
    if job.contract is not None:  # our runner would train the built-in model instead of the tenant's
        raise InvalidInput(
            f"training job {job.job_id!r} names a {job.contract.trainer.kind} trainer: "
            "its Job is kubernetes_image_job.image_trainer_job_manifest's"
        )
    directory = job_directory(job, config)
    relative = posixpath.relpath(directory, config.work_mount_path)
    output_dir = posixpath.normpath(job.output_dir)
    labels = job_labels(job)
    annotations = {JOB_ID_ANNOTATION: job.job_id, JOB_DIGEST_ANNOTATION: job_digest(job)}
    container = Container(
        name=CONTAINER_NAME,
        image=config.image,
        image_pull_policy=config.image_pull_policy,
        command=[config.python_executable, "-m", RUNNER_MODULE, posixpath.join(output_dir, JOB_FILE)],
        working_dir=output_dir,
        env=training_env(config),
        resources=resources(job, config),
        volume_mounts=[
            VolumeMount(
                name=WORK_VOLUME, mount_path=directory, sub_path=None if relative == "." else relative
            ),
            VolumeMount(name=TMP_VOLUME, mount_path=TMP_PATH),
        ],
        security_context=SecurityContext(
            allow_privilege_escalation=False,
            privileged=False,
            read_only_root_filesystem=True,
            run_as_non_root=True,
            capabilities=Capabilities(drop=["ALL"]),
        ),
    )
    pod = PodSpec(
        service_account_name=config.service_account,
        termination_grace_period_seconds=config.termination_grace_period_s,
        security_context=PodSecurityContext(
            run_as_non_root=True,
            run_as_user=config.run_as_user,
            run_as_group=config.run_as_group,
            fs_group=config.run_as_group,
            seccomp_profile=SeccompProfile(),
        ),
        containers=[container],
        volumes=[
            Volume(
                name=WORK_VOLUME,
                persistent_volume_claim=PersistentVolumeClaimSource(claim_name=config.work_volume_claim),
            ),
            Volume(name=TMP_VOLUME, empty_dir=EmptyDirSource(size_limit=config.tmp_size_limit)),
        ],
        image_pull_secrets=[LocalObjectReference(name=n) for n in config.image_pull_secrets] or None,
        node_selector=dict(config.node_selector) or None,
        tolerations=list(config.tolerations) or None,
    )
    return Job(
        metadata=ObjectMeta(
            name=job_name(job.job_id), namespace=config.namespace, labels=labels, annotations=annotations
        ),
        spec=JobSpec(
            backoff_limit=config.backoff_limit,
            active_deadline_seconds=max(1, math.ceil(job.timeout_s)),
            ttl_seconds_after_finished=config.ttl_seconds_after_finished,
            template=PodTemplateSpec(metadata=TemplateMeta(labels=labels, annotations=annotations), spec=pod),
        ),
    )


_SUFFIXES = {
    "": 1,
    "m": 0.001,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def _bytes(quantity: str) -> float:
    number = re.match(r"^[0-9.]+", quantity)
    assert number is not None  # validated by kubernetes_config.QUANTITY
    return float(number.group()) * _SUFFIXES[quantity[number.end() :]]
