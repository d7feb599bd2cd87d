"""Typed batch/v1 Job manifests for a tenant's image trainer (the training contract run as a Kubernetes Job).

A TrainingJob whose ``contract`` names an image trainer (a tenant's OCI image, pinned by digest,
following the training contract of ``docs/bring-your-own-model.md``; its input directory written by the caller)
becomes a Job whose pod has two containers, built by :func:`image_trainer_job_manifest`:

1. the init container ``stage-input`` runs *our* image (``python -m evolution.training.stage_input``). It mounts
   the job's input directory of the claim read-only and copies the contract's three input files into the pod-local
   emptyDir ``input``, checking each copy against the sha256 the worker put into the manifest (the digests travel
   in the Job object, which only the worker can write, not in a file beside the data on the shared volume);
2. the container ``train`` runs the tenant's image with the definition's command and args (``{input}`` and
   ``{output}`` substituted, ``$`` escaped so Kubernetes' ``$(VAR)`` expansion leaves them as written). It sees
   the staged copy read-only at ``/evolution/input``, its own output directory of the claim (``subPath``: nothing
   else of the claim) at ``/evolution/output``, a size-limited emptyDir at ``/tmp``, and the contract's variables.

Why an init container, and not a sidecar or the tenant reading the claim itself: staging must be *finished and
checked* before the tenant's code starts, which is exactly what an init container guarantees (a native sidecar
runs beside the main container, so its check would race the trainer); the check is made on the copy the trainer
reads, in a volume nothing else can write afterwards, so the bytes cannot change between check and use. The output
needs no second step in the pod: the worker collects it from the claim after the Job has ended
(:mod:`evolution.training.kubernetes_backend`), when no container can write it any more. The paths inside the
tenant's container are fixed, so the same definition gives the same argv on every run (what a reproduction
compares), and the tenant never learns the worker's directory layout.

The tenant's pod carries the ``tenant-trainer`` labels (:mod:`evolution.training.kubernetes_labels`), selected by
``deploy/kubernetes/base/networkpolicy-tenant-trainer.yaml``: no ingress and no egress, since the contract needs
none (the claim is mounted by the kubelet, not reached over the pod network). It runs with no service-account
token, as ``run_as_user`` (non-root), read-only root file system, no capabilities, no privilege escalation,
RuntimeDefault seccomp, requests equal to limits from the definition, and ``activeDeadlineSeconds`` from the job's
time limit. A tag-only image never reaches a manifest: the definition refuses it, and the builder checks again.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from evolution.errors import InvalidInput
from evolution.registry.model_definitions import IMAGE_BY_DIGEST, ImageTrainer
from evolution.training.compute import THREAD_CAPS, TrainingJob
from evolution.training.contract import (
    CONFIG_FILE,
    CONTRACT,
    CONTRACT_ENV,
    INPUT_DIR_ENV,
    OUTPUT_DIR_ENV,
    SCHEMA_FILE,
    SEED_ENV,
    SNAPSHOT_FILE,
)
from evolution.training.kubernetes_manifest import (
    CONTAINER_NAME,
    JOB_DIGEST_ANNOTATION,
    JOB_ID_ANNOTATION,
    TMP_PATH,
    TMP_VOLUME,
    WORK_VOLUME,
    Capabilities,
    Container,
    EmptyDirSource,
    EnvVar,
    Job,
    JobSpec,
    KubernetesBackendConfig,
    LocalObjectReference,
    ObjectMeta,
    PersistentVolumeClaimSource,
    PodSecurityContext,
    PodSpec,
    PodTemplateSpec,
    ResourceRequirements,
    SeccompProfile,
    SecurityContext,
    TemplateMeta,
    Volume,
    VolumeMount,
    job_digest,
    job_labels,
    job_name,
    on_work_volume,
    training_env,
)
from evolution.training.stage_input import MODULE as STAGE_INPUT_MODULE
from evolution.training.stage_input import expectation

STAGE_INPUT_CONTAINER = "stage-input"
STAGED_INPUT_VOLUME = "input"

# Inside an image trainer's pod. Fixed, so that the tenant's argv is the same on every run.
TRAINER_INPUT_PATH = "/evolution/input"
TRAINER_OUTPUT_PATH = "/evolution/output"
SHARED_INPUT_PATH = "/evolution/shared-input"  # the init container's view of the job's input directory

CONTRACT_INPUT_FILES = (SNAPSHOT_FILE, SCHEMA_FILE, CONFIG_FILE)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def image_trainer_job_manifest(
    job: TrainingJob, config: KubernetesBackendConfig, input_digests: Mapping[str, str]
) -> dict[str, Any]:
    """The batch/v1 Job (the JSON the API server receives) that runs ``job``'s image trainer under the contract.

    ``job.contract`` names an image trainer and its input directory; ``input_digests`` is the sha256 hex of each
    contract input file there, by name, taken by the worker after the caller wrote them: the staging step checks
    its copies against these. InvalidInput if the job is not an image trainer's, the image is not pinned by digest,
    a digest is missing or malformed, or a directory is off the work volume or inside the other.
    """
    return build_image_job(job, config, input_digests).to_manifest()


def build_image_job(
    job: TrainingJob, config: KubernetesBackendConfig, input_digests: Mapping[str, str]
) -> Job:
    """The typed Job for an image trainer's ``job`` (see the module docstring for its shape and why)."""
    run = job.contract
    if run is None or not isinstance(run.trainer, ImageTrainer):
        kind = "built-in" if run is None else run.trainer.kind
        raise InvalidInput(f"training job {job.job_id!r}: a {kind} trainer is not run from an image")
    trainer = run.trainer
    # The definition refuses a tag; a trainer built without validation (model_construct, model_copy) must not
    # slip one through: a tag can be moved to other bytes after the definition was approved.
    if IMAGE_BY_DIGEST.match(trainer.image) is None:
        raise InvalidInput(f"training job {job.job_id!r}: image {trainer.image!r} is not pinned by digest")
    if set(input_digests) != set(CONTRACT_INPUT_FILES) or not all(
        _SHA256_HEX.match(d) for d in input_digests.values()
    ):
        raise InvalidInput(
            f"training job {job.job_id!r}: input_digests must give the sha256 hex of exactly "
            f"{', '.join(CONTRACT_INPUT_FILES)}"
        )
    input_dir, output_dir = image_job_directories(job, config)
    labels = job_labels(job)
    annotations = {JOB_ID_ANNOTATION: job.job_id, JOB_DIGEST_ANNOTATION: job_digest(job, input_digests)}
    restricted = SecurityContext(
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        capabilities=Capabilities(drop=["ALL"]),
    )
    tmp_mount = VolumeMount(name=TMP_VOLUME, mount_path=TMP_PATH)
    stage = Container(
        name=STAGE_INPUT_CONTAINER,
        image=config.image,
        image_pull_policy=config.image_pull_policy,
        command=[
            config.python_executable,
            "-m",
            STAGE_INPUT_MODULE,
            "--from",
            SHARED_INPUT_PATH,
            "--to",
            TRAINER_INPUT_PATH,
            *(f"--expect={expectation(name, input_digests[name])}" for name in CONTRACT_INPUT_FILES),
        ],
        env=training_env(config),
        resources=ResourceRequirements(
            requests={"cpu": config.stage_input_cpu, "memory": config.stage_input_memory},
            limits={"cpu": config.stage_input_cpu, "memory": config.stage_input_memory},
        ),
        volume_mounts=[
            VolumeMount(
                name=WORK_VOLUME,
                mount_path=SHARED_INPUT_PATH,
                sub_path=posixpath.relpath(input_dir, config.work_mount_path),
                read_only=True,
            ),
            VolumeMount(name=STAGED_INPUT_VOLUME, mount_path=TRAINER_INPUT_PATH),
            tmp_mount,
        ],
        security_context=restricted,
    )
    train = Container(
        name=CONTAINER_NAME,
        image=trainer.image,
        image_pull_policy=config.trainer_image_pull_policy,
        command=[contract_argument(a) for a in trainer.command] or None,
        args=[contract_argument(a) for a in trainer.args] or None,
        env=trainer_env(job),
        resources=trainer_resources(trainer, config),
        volume_mounts=[
            VolumeMount(name=STAGED_INPUT_VOLUME, mount_path=TRAINER_INPUT_PATH, read_only=True),
            VolumeMount(
                name=WORK_VOLUME,
                mount_path=TRAINER_OUTPUT_PATH,
                sub_path=posixpath.relpath(output_dir, config.work_mount_path),
            ),
            tmp_mount,
        ],
        security_context=restricted,
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
        init_containers=[stage],
        containers=[train],
        volumes=[
            Volume(
                name=WORK_VOLUME,
                persistent_volume_claim=PersistentVolumeClaimSource(claim_name=config.work_volume_claim),
            ),
            Volume(
                name=STAGED_INPUT_VOLUME, empty_dir=EmptyDirSource(size_limit=config.staged_input_size_limit)
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


def image_job_directories(job: TrainingJob, config: KubernetesBackendConfig) -> tuple[str, str]:
    """(input_dir, output_dir) normalised: under the work mount, and neither inside the other.

    Apart, because the tenant's container mounts its output directory writable: were the input below it, the
    tenant could change what a retry of the same job stages (the digest check would catch it, but only then).
    """
    assert job.contract is not None
    input_dir = on_work_volume(job.job_id, "input_dir", job.contract.input_dir, config)
    output_dir = on_work_volume(job.job_id, "output_dir", job.output_dir, config)
    if posixpath.commonpath([input_dir, output_dir]) in (input_dir, output_dir):
        raise InvalidInput(
            f"training job {job.job_id!r}: input_dir {input_dir!r} and output_dir {output_dir!r} must be apart "
            "(neither inside the other)"
        )
    return input_dir, output_dir


def contract_argument(value: str) -> str:
    """A command or argument of the definition as the container must get it.

    ``{input}`` and ``{output}`` become the fixed directories inside the pod (the contract's substitution; other
    braces stay as written). Then every ``$`` is doubled: Kubernetes expands ``$(NAME)`` in command and args from
    the container's environment and turns ``$$`` into ``$``, so doubling is what delivers the text unchanged.
    """
    substituted = value.replace("{input}", TRAINER_INPUT_PATH).replace("{output}", TRAINER_OUTPUT_PATH)
    return substituted.replace("$", "$$")


def trainer_env(job: TrainingJob) -> list[EnvVar]:
    """The contract's variables and the thread caps, nothing of the worker's (no extra_env: those are for our
    image) and no secret."""
    env = dict(THREAD_CAPS)
    env.update(
        {
            INPUT_DIR_ENV: TRAINER_INPUT_PATH,
            OUTPUT_DIR_ENV: TRAINER_OUTPUT_PATH,
            CONTRACT_ENV: job.contract.contract if job.contract is not None else CONTRACT,
            SEED_ENV: str(job.seed),
            "PYTHONHASHSEED": "0",  # harmless for other languages; Python trainers get reproducible hashing
            "HOME": TMP_PATH,
            "TMPDIR": TMP_PATH,
        }
    )
    return [EnvVar(name=name, value=value) for name, value in sorted(env.items())]


def trainer_resources(trainer: ImageTrainer, config: KubernetesBackendConfig) -> ResourceRequirements:
    """The definition's resources as requests equal to limits: what the tenant asked for is reserved, and no more
    is taken from the node (no noisy neighbour). ``memory_mb``, the limit every trainer kind shares, wins."""
    memory = f"{trainer.memory_mb}Mi" if trainer.memory_mb is not None else trainer.resources.memory
    amounts = {"cpu": trainer.resources.cpu, "memory": memory}
    if trainer.resources.gpus > 0:
        amounts[config.gpu_resource] = str(trainer.resources.gpus)
    return ResourceRequirements(requests=dict(amounts), limits=dict(amounts))
