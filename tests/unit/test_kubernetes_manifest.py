"""The training Job manifest, field by field, and its round trip through the official client's typed model."""

from __future__ import annotations

import re
from typing import Any

import pytest
from kubernetes import client as k8s
from pydantic import ValidationError

from evolution.errors import InvalidInput
from evolution.registry.model_definitions import CommandTrainer, ImageTrainer, Resources
from evolution.training.compute import JOB_FILE, RUNNER_MODULE, THREAD_CAPS, ContractRun, TrainingJob
from evolution.training.kubernetes_image_job import (
    CONTRACT_INPUT_FILES,
    contract_argument,
    image_trainer_job_manifest,
)
from evolution.training.kubernetes_labels import (
    MODEL_LABEL,
    TENANT_LABEL,
    TENANT_TRAINER_POD_LABELS,
    TRAINING_POD_LABELS,
)
from evolution.training.kubernetes_manifest import (
    JOB_DIGEST_ANNOTATION,
    JOB_ID_ANNOTATION,
    KubernetesBackendConfig,
    Toleration,
    build_job,
    job_digest,
    job_name,
    label_value,
)
from evolution.training.trainer import TrainingConfig

WORK = "/var/lib/evolution/work"
RUN_DIR = f"{WORK}/acme/retrain-acme-7"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _job(**overrides: Any) -> TrainingJob:
    fields: dict[str, Any] = {
        "job_id": "retrain_acme_7",
        "tenant": "acme",
        "model_name": "yield",
        "dataset_path": f"{RUN_DIR}/dataset.jsonl",
        "config": TrainingConfig(features=["rain", "ndvi"], target="yield_t_ha"),
        "seed": 5,
        "output_dir": f"{RUN_DIR}/model",
        "timeout_s": 86400.0,
    }
    return TrainingJob.model_validate(fields | overrides)


def _manifest(job: TrainingJob | None = None, **config: Any) -> dict[str, Any]:
    return build_job(job or _job(), KubernetesBackendConfig(**config)).to_manifest()


def _pod(manifest: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    containers = _pod(manifest)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def test_it_is_a_batch_v1_job_in_the_configured_namespace_named_from_the_job_id() -> None:
    manifest = _manifest(namespace="ml-training")
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    assert manifest["metadata"]["namespace"] == "ml-training"
    assert manifest["metadata"]["name"] == job_name("retrain_acme_7")
    assert manifest["metadata"]["annotations"][JOB_ID_ANNOTATION] == "retrain_acme_7"
    assert manifest["metadata"]["annotations"][JOB_DIGEST_ANNOTATION] == job_digest(_job())


def test_the_container_runs_the_job_runner_on_the_job_file_in_the_output_dir() -> None:
    container = _container(_manifest(image="registry.example/evolution:1.4", image_pull_policy="Always"))
    assert container["name"] == "train"
    assert container["image"] == "registry.example/evolution:1.4"
    assert container["imagePullPolicy"] == "Always"
    assert container["command"] == ["python", "-m", RUNNER_MODULE, f"{RUN_DIR}/model/{JOB_FILE}"]
    assert "args" not in container
    assert container["workingDir"] == f"{RUN_DIR}/model"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert THREAD_CAPS.items() <= env.items()
    assert env["PYTHONHASHSEED"] == "0" and env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"


def test_resources_come_from_the_config_and_the_jobs_memory_limit_wins() -> None:
    resources = _container(
        _manifest(cpu_request="500m", cpu_limit="3", memory_request="1Gi", memory_limit="8Gi")
    )["resources"]
    assert resources == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "3", "memory": "8Gi"},
    }
    limited = _container(_manifest(_job(memory_limit_mb=512), memory_request="2Gi"))["resources"]
    assert limited["limits"]["memory"] == "512Mi"
    assert limited["requests"]["memory"] == "512Mi"  # never a request above the limit


def test_gpus_are_requested_as_an_extended_resource_only_when_asked_for() -> None:
    assert "nvidia.com/gpu" not in str(_container(_manifest())["resources"])
    resources = _container(_manifest(gpus=2))["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == "2"
    assert resources["limits"]["nvidia.com/gpu"] == "2"


def test_the_deadline_is_the_jobs_timeout_and_kubernetes_does_not_retry() -> None:
    spec = _manifest(_job(timeout_s=4 * 3600 + 0.5))["spec"]
    assert spec["activeDeadlineSeconds"] == 4 * 3600 + 1  # rounded up, never shorter than asked
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert spec["completions"] == 1 and spec["parallelism"] == 1
    custom = _manifest(backoff_limit=2, ttl_seconds_after_finished=60)["spec"]
    assert custom["backoffLimit"] == 2 and custom["ttlSecondsAfterFinished"] == 60
    assert "ttlSecondsAfterFinished" not in _manifest(ttl_seconds_after_finished=None)["spec"]


def test_the_job_and_its_pods_carry_the_training_labels_the_network_policy_selects_on() -> None:
    manifest = _manifest()
    expected = {**TRAINING_POD_LABELS, TENANT_LABEL: "acme", MODEL_LABEL: "yield"}
    assert manifest["metadata"]["labels"] == expected
    assert manifest["spec"]["template"]["metadata"]["labels"] == expected
    assert manifest["spec"]["template"]["metadata"]["annotations"][JOB_ID_ANNOTATION] == "retrain_acme_7"


def test_label_values_are_made_label_safe_and_stay_distinct() -> None:
    manifest = _manifest(_job(tenant="Acme Farms/Nord", model_name="yield" * 20))
    labels = manifest["spec"]["template"]["metadata"]["labels"]
    for value in (labels[TENANT_LABEL], labels[MODEL_LABEL]):
        assert LABEL_VALUE.match(value) and len(value) <= 63
    assert labels[TENANT_LABEL].startswith("Acme-Farms-Nord-")
    assert label_value("acme") == "acme"
    assert label_value("a b") != label_value("a_b") != label_value("a-b")
    assert LABEL_VALUE.match(label_value("-_.")) and label_value("-_.")


def test_job_names_are_deterministic_dns_labels_and_do_not_collide() -> None:
    ids = ["retrain/acme/run-1", "retrain_acme_run-1", "X" * 200, "---", "Ünïcode run"]
    names = [job_name(i) for i in ids]
    assert names == [job_name(i) for i in ids]
    assert len(set(names)) == len(names)
    for name in names:
        assert DNS_LABEL.match(name) and len(name) <= 63, name
    assert job_name("retrain/acme/run-1").startswith("train-retrain-acme-run-1-")


def test_the_pod_has_no_api_rights_and_never_restarts() -> None:
    pod = _pod(_manifest(service_account="trainer-no-rbac"))
    assert pod["serviceAccountName"] == "trainer-no-rbac"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["restartPolicy"] == "Never"


def test_the_pod_runs_unprivileged_with_a_read_only_root_and_no_capabilities() -> None:
    manifest = _manifest(run_as_user=2000, run_as_group=3000)
    assert _pod(manifest)["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 2000,
        "runAsGroup": 3000,
        "fsGroup": 3000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert _container(manifest)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_only_the_jobs_own_directory_of_the_work_claim_is_mounted_at_the_same_path() -> None:
    manifest = _manifest(work_volume_claim="shared-work", tmp_size_limit="512Mi")
    volumes = {v["name"]: v for v in _pod(manifest)["volumes"]}
    assert volumes["work"] == {"name": "work", "persistentVolumeClaim": {"claimName": "shared-work"}}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}}
    mounts = {m["name"]: m for m in _container(manifest)["volumeMounts"]}
    assert mounts["work"] == {
        "name": "work",
        "mountPath": RUN_DIR,
        "subPath": "acme/retrain-acme-7",
        "readOnly": False,
    }
    assert mounts["tmp"]["mountPath"] == "/tmp"
    # Directly under the mount: the whole claim, no subPath.
    flat = _manifest(_job(dataset_path=f"{WORK}/d.jsonl", output_dir=f"{WORK}/model"))
    work_mount = next(m for m in _container(flat)["volumeMounts"] if m["name"] == "work")
    assert work_mount["mountPath"] == WORK and "subPath" not in work_mount


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dataset_path", "/elsewhere/d.jsonl"),
        ("output_dir", f"{WORK}/../etc/model"),
        ("output_dir", "relative/model"),
        ("dataset_path", f"{WORK}-other/d.jsonl"),
    ],
)
def test_paths_the_pod_could_not_see_are_refused(field: str, value: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        _manifest(_job(**{field: value}))


def test_scheduling_and_pull_secrets_are_passed_through() -> None:
    pod = _pod(
        _manifest(
            node_selector={"gpu": "a100"},
            tolerations=[Toleration(key="gpu", operator="Exists", effect="NoSchedule")],
            image_pull_secrets=["regcred"],
        )
    )
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    bare = _pod(_manifest())
    assert not {"nodeSelector", "tolerations", "imagePullSecrets"} & set(bare)


def test_the_official_clients_typed_model_accepts_every_field_unchanged() -> None:
    manifest = _manifest(gpus=1, node_selector={"a": "b"}, image_pull_secrets=["r"])
    typed = k8s.V1Job.from_dict(manifest)
    assert k8s.ApiClient().sanitize_for_serialization(typed) == manifest


@pytest.mark.parametrize(
    "bad",
    [
        {"cpu_limit": "two"},
        {"memory_request": "4 GB"},
        {"namespace": "Training"},
        {"work_volume_claim": "a_b"},
        {"work_mount_path": "relative"},
        {"work_mount_path": "/"},
        {"gpus": -1},
        {"image_pull_policy": "Sometimes"},
        {"trainer_image_pull_policy": "Sometimes"},
        {"staged_input_size_limit": "lots"},
        {"stage_input_memory": "256 MB"},
    ],
)
def test_invalid_configuration_is_refused_with_the_field_named(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=next(iter(bad))):
        KubernetesBackendConfig(**bad)


# ------------------------------------------------------------------------------------- an image trainer's Job

TENANT_IMAGE = "registry.example.com/acme/yield@sha256:" + "e" * 64
DIGESTS = {name: f"{index:x}" * 64 for index, name in enumerate(CONTRACT_INPUT_FILES, start=10)}


def _image_job(trainer: ImageTrainer | CommandTrainer | None = None, /, **overrides: Any) -> TrainingJob:
    run = ContractRun(
        trainer=trainer or ImageTrainer(image=TENANT_IMAGE, command=["train"]),
        input_dir=overrides.pop("input_dir", f"{RUN_DIR}/input"),
        max_model_mb=200,
    )
    return _job(**({"output_dir": f"{RUN_DIR}/output", "contract": run} | overrides))


def _image_manifest(
    job: TrainingJob | None = None, digests: dict[str, str] | None = None, **config: Any
) -> dict[str, Any]:
    return image_trainer_job_manifest(
        job or _image_job(), KubernetesBackendConfig(**config), digests or DIGESTS
    )


def test_an_image_trainers_pod_carries_the_tenant_trainer_labels_not_the_built_in_trainers() -> None:
    labels = _image_manifest()["spec"]["template"]["metadata"]["labels"]
    assert labels == {**TENANT_TRAINER_POD_LABELS, TENANT_LABEL: "acme", MODEL_LABEL: "yield"}
    assert not TRAINING_POD_LABELS.items() <= labels.items()


def test_the_tenant_image_must_be_pinned_by_digest_even_when_the_trainer_skipped_validation() -> None:
    for image in ("registry.example.com/acme/yield:latest", "yield", f"yield@sha256:{'E' * 64}"):
        unvalidated = ImageTrainer.model_construct(
            image=image, command=["train"], args=[], resources=Resources()
        )
        with pytest.raises(InvalidInput, match="not pinned by digest"):
            _image_manifest(_image_job(unvalidated))


def test_input_and_output_placeholders_are_substituted_and_every_dollar_is_escaped() -> None:
    assert contract_argument("{input}/snapshot.parquet") == "/evolution/input/snapshot.parquet"
    assert contract_argument("--out={output}") == "--out=/evolution/output"
    assert contract_argument('{"depth": {depth}}') == '{"depth": {depth}}'  # other braces stay
    # Kubernetes turns $$ into $ and expands $(NAME): doubled, the text arrives as written.
    assert contract_argument("$(HOME) costs $5, $$") == "$$(HOME) costs $$5, $$$$"
    trainer = ImageTrainer(
        image=TENANT_IMAGE, command=["python", "{input}/../run.py"], args=["--seed", "$SEED"]
    )
    train = _container(_image_manifest(_image_job(trainer)))
    assert train["command"] == ["python", "/evolution/input/../run.py"]
    assert train["args"] == ["--seed", "$$SEED"]


def test_an_image_without_a_command_runs_its_own_entrypoint() -> None:
    train = _container(_image_manifest(_image_job(ImageTrainer(image=TENANT_IMAGE))))
    assert "command" not in train and "args" not in train and "workingDir" not in train


def test_the_trainers_resources_are_reserved_whole_and_its_memory_mb_wins() -> None:
    trainer = ImageTrainer(image=TENANT_IMAGE, resources=Resources(cpu="3", memory="6Gi", gpus=2))
    resources = _container(_image_manifest(_image_job(trainer), gpu_resource="amd.com/gpu"))["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "3", "memory": "6Gi", "amd.com/gpu": "2"}
    limited = trainer.model_copy(update={"memory_mb": 1536, "resources": Resources(cpu="1")})
    resources = _container(_image_manifest(_image_job(limited)))["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "1", "memory": "1536Mi"}


def test_the_deadline_is_the_jobs_time_limit() -> None:
    assert (
        _image_manifest(_image_job(timeout_s=3 * 3600 + 0.2))["spec"]["activeDeadlineSeconds"] == 3 * 3600 + 1
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"input_dir": "/elsewhere/input"}, "input_dir"),
        ({"output_dir": f"{WORK}-other/output"}, "output_dir"),
        ({"input_dir": f"{RUN_DIR}/output/input"}, "must be apart"),
        ({"output_dir": f"{RUN_DIR}/input/output"}, "must be apart"),
        ({"input_dir": f"{RUN_DIR}/output"}, "must be apart"),
    ],
)
def test_the_input_and_output_directories_must_be_on_the_work_volume_and_apart(
    overrides: dict[str, str], match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        _image_manifest(_image_job(**overrides))


@pytest.mark.parametrize(
    "digests",
    [
        {k: v for k, v in DIGESTS.items() if k != "schema.json"},
        {**DIGESTS, "extra.bin": "0" * 64},
        {**DIGESTS, "config.json": "0" * 63},
        {**DIGESTS, "config.json": "Z" * 64},
    ],
)
def test_every_contract_input_needs_its_sha256(digests: dict[str, str]) -> None:
    with pytest.raises(InvalidInput, match="input_digests"):
        _image_manifest(digests=digests)


def test_the_input_digests_are_bound_into_the_adoption_digest() -> None:
    job = _image_job()
    annotation = _image_manifest(job)["metadata"]["annotations"][JOB_DIGEST_ANNOTATION]
    assert annotation == job_digest(job, DIGESTS) != job_digest(job)
    other = {**DIGESTS, "snapshot.parquet": "f" * 64}
    assert _image_manifest(job, other)["metadata"]["annotations"][JOB_DIGEST_ANNOTATION] != annotation


def test_a_contract_trainers_job_is_never_built_as_the_built_in_runner() -> None:
    for trainer in (ImageTrainer(image=TENANT_IMAGE), CommandTrainer(argv=["python", "train.py"])):
        with pytest.raises(InvalidInput, match="trainer"):
            build_job(_image_job(trainer), KubernetesBackendConfig())
    with pytest.raises(InvalidInput, match="not run from an image"):
        _image_manifest(_image_job(CommandTrainer(argv=["python", "train.py"])))
    with pytest.raises(InvalidInput, match="built-in trainer is not run from an image"):
        _image_manifest(_job())


def test_the_image_trainers_job_round_trips_through_the_official_clients_typed_model() -> None:
    trainer = ImageTrainer(
        image=TENANT_IMAGE, command=["train"], args=["{input}"], resources=Resources(gpus=1)
    )
    manifest = _image_manifest(
        _image_job(trainer), image_pull_secrets=["regcred"], node_selector={"gpu": "yes"}
    )
    typed = k8s.V1Job.from_dict(manifest)
    assert k8s.ApiClient().sanitize_for_serialization(typed) == manifest
