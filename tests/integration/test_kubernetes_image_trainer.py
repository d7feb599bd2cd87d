"""A tenant's image trainer run by the Kubernetes Job backend, against the fake API server whose kubelet runs each
container as a local process: our image's init container (``python -m evolution.training.stage_input``) stages and
checks the input, then the tenant's "image" (a PATH holding tests/support/sklearn_contract_trainer.py, which runs
the example trainer examples/sklearn_pipeline/train.py, a real scikit-learn pipeline exported with skl2onnx)
trains; volumes are emulated, so the containers see the pod's paths, not the worker's. The manifest that reached the API server is checked field by field. The command trainer the local
backend's tests run (tests/support/contract_trainers.py, "linear") runs unchanged as an image too."""

from __future__ import annotations

import json
import math
import random
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from kubernetes import client as k8s
from pydantic import ValidationError

from evolution.errors import Conflict, InvalidInput, TrainingFailed
from evolution.registry.model_definitions import CommandTrainer, ImageTrainer, Resources
from evolution.training import kubernetes_backend
from evolution.training.compute import THREAD_CAPS, ContractRun, TrainingJob, sha256_file
from evolution.training.contract import CONTRACT
from evolution.training.kubernetes_backend import KubernetesJobBackend
from evolution.training.kubernetes_image_job import image_trainer_job_manifest
from evolution.training.kubernetes_labels import MODEL_LABEL, TENANT_LABEL, TENANT_TRAINER_POD_LABELS
from evolution.training.kubernetes_manifest import job_name
from evolution.training.trainer import TrainingConfig
from tests.support.contract_trainers import write_trainer
from tests.support.fake_kube_api import NAMESPACE, FakeKube, backend_config
from tests.support.fake_kube_pod_runner import image_env

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "deploy" / "kubernetes" / "base"
TRAINER_SCRIPT = ROOT / "tests" / "support" / "sklearn_contract_trainer.py"

OUR_IMAGE = "evolution-training:test"
TENANT_IMAGE = "registry.example.com/acme/yield-trainer@sha256:" + "0123456789abcdef" * 4
LINEAR_IMAGE = "registry.example.com/acme/linear-trainer@sha256:" + "fedcba9876543210" * 4
JOB_ID = "acme-yield-run-1"
TARGET = "yield_t_ha"
ROWS = 240
NOTE = "costs $5 and $(HOME), kept as written"  # Kubernetes would expand $(HOME) unless escaped

TRAINER = ImageTrainer(
    image=TENANT_IMAGE,
    command=["yield-trainer"],
    args=["--input", "{input}", "--output={output}", "--note", NOTE],
    resources=Resources(cpu="500m", memory="1Gi"),
    timeout_s=90,
)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The shared work volume: the worker's view of the claim (the fake kubelet mounts parts of it in pods)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def _image_with(directory: Path, command: str, script: Path) -> dict[str, str]:
    """A tenant's "image": the environment whose PATH finds ``command``, which runs ``script``, and nothing of ours."""
    directory.mkdir()
    entry = directory / command
    entry.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    entry.chmod(entry.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{directory}:/usr/bin:/bin"}


@pytest.fixture
def kube(tmp_path: Path, work: Path) -> Iterator[FakeKube]:
    linear = write_trainer(tmp_path / "linear-image", "linear")
    images = {
        OUR_IMAGE: image_env(),
        TENANT_IMAGE: _image_with(tmp_path / "tenant-image-bin", "yield-trainer", TRAINER_SCRIPT),
        LINEAR_IMAGE: _image_with(tmp_path / "linear-image-bin", "linear-trainer", linear),
    }
    with FakeKube(
        namespaces=[NAMESPACE], known_images=[], images=images, claims={"evolution-work": work}
    ) as server:
        yield server


def _backend(kube: FakeKube, work: Path) -> KubernetesJobBackend:
    return KubernetesJobBackend(backend_config(kube, work, image=OUR_IMAGE))


def _job_dir(work: Path) -> Path:
    return work / "acme" / "yield-run-1"


def _write_inputs(work: Path, seed: int = 3, *, with_crop: bool = True) -> Path:
    """The contract's three input files, as the worker writes them before the Job starts (the categorical feature
    ``crop`` left out with ``with_crop`` False, for trainers that take numbers only)."""
    input_dir = _job_dir(work) / "input"
    input_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    effect = {"wheat": 1.0, "maize": 2.5, "barley": 0.5}
    rain: list[float | None] = []
    crop: list[str | None] = []
    yields: list[float] = []
    for _ in range(ROWS):
        rain_mm, kind = rng.uniform(0, 80), rng.choice(sorted(effect))
        rain.append(rain_mm)
        crop.append(kind)
        yields.append(3 + 0.04 * rain_mm + effect[kind] + rng.gauss(0, 0.2))
    rain[7], crop[11] = None, None  # missing values, as the contract allows
    arrays = {
        "rain_mm": pa.array(rain, type=pa.float64()),
        "crop": pa.array(crop, type=pa.string()),
        TARGET: pa.array(yields, type=pa.float64()),
    }
    columns = [
        {"name": "rain_mm", "type": "numeric"},
        {"name": "crop", "type": "categorical"},
        {"name": TARGET, "type": "target"},
    ]
    if not with_crop:
        del arrays["crop"], columns[1]
    pq.write_table(pa.table(arrays), input_dir / "snapshot.parquet")
    (input_dir / "schema.json").write_text(json.dumps({"columns": columns}))
    config = {
        "contract": CONTRACT,
        "tenant": "acme",
        "model_name": "yield",
        "features": columns[:-1],
        "target": TARGET,
        "loss": "mae",
        "hyperparameters": {},
        "seed": 42,
        "rows": ROWS,
        "snapshot": {"id": "ds-test", "merkle_root": "0" * 64},
    }
    (input_dir / "config.json").write_text(json.dumps(config))
    return input_dir


def _job(work: Path, trainer: ImageTrainer | CommandTrainer = TRAINER) -> TrainingJob:
    job_dir = _job_dir(work)
    return TrainingJob(
        job_id=JOB_ID,
        tenant="acme",
        model_name="yield",
        dataset_path=str(job_dir / "input" / "snapshot.parquet"),
        config=TrainingConfig(features=["rain_mm", "crop"], categorical=["crop"], target=TARGET),
        seed=42,
        output_dir=str(job_dir / "output"),
        timeout_s=trainer.timeout_s or 60,
        contract=ContractRun(trainer=trainer, input_dir=str(job_dir / "input"), max_model_mb=50),
    )


def _policy_selector(file: str) -> dict[str, str]:
    (policy,) = [d for d in yaml.safe_load_all((POLICIES / file).read_text()) if d]
    labels: dict[str, str] = policy["spec"]["podSelector"]["matchLabels"]
    return labels


def _trainer_saw(log_tail: str) -> dict[str, Any]:
    """What the contract trainer printed about its call (its first output line)."""
    line = next(line for line in log_tail.splitlines() if line.startswith("{"))
    seen: dict[str, Any] = json.loads(line)
    return seen


RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


async def test_an_image_trainer_job_stages_its_input_runs_the_tenant_image_and_its_model_comes_back(
    kube: FakeKube, work: Path
) -> None:
    input_dir = _write_inputs(work)
    digests = {
        name: sha256_file(input_dir / name) for name in ("snapshot.parquet", "schema.json", "config.json")
    }
    backend = _backend(kube, work)
    result = await backend.run(_job(work))

    # The run: succeeded, and what came back is the trainer's real ONNX model, collected by digest.
    assert result.status == "succeeded", (result.error, result.log_tail)
    assert result.exit_code == 0 and result.error is None
    output = _job_dir(work) / "output"
    assert result.output_files == {
        "model.onnx": sha256_file(output / "model.onnx"),
        "metrics.json": sha256_file(output / "metrics.json"),
    }
    assert result.metrics["rows"] == ROWS and result.metrics["train_mae"] < 0.5
    session = ort.InferenceSession((output / "model.onnx").read_bytes(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["rain_mm", "crop"]
    (prediction,) = session.run(
        None, {"rain_mm": np.array([[40.0], [np.nan]], np.float32), "crop": np.array([["maize"], [""]])}
    )
    assert np.isfinite(prediction).all() and 6.0 < float(prediction[0][0]) < 8.0
    # What reached the tenant's process: the args as the definition wrote them (the `$` survived Kubernetes'
    # expansion), the contract's variables, and the input directory is the staged copy the args name too.
    seen = _trainer_saw(result.log_tail)
    assert seen["argv"][3:] == ["--note", NOTE]
    assert seen["argv"][1] == seen["env"]["EVOLUTION_INPUT_DIR"]
    assert seen["argv"][2] == f"--output={seen['env']['EVOLUTION_OUTPUT_DIR']}"
    assert seen["env"]["EVOLUTION_TRAINING_CONTRACT"] == CONTRACT and seen["env"]["EVOLUTION_SEED"] == "42"
    assert "train.py: fitted GradientBoostingRegressor" in result.log_tail, result.log_tail
    (pod,) = kube.pods(NAMESPACE, job_name(JOB_ID))
    (staged,) = pod["status"]["initContainerStatuses"]
    assert staged["name"] == "stage-input" and staged["state"]["terminated"]["exitCode"] == 0
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"

    # The manifest, field by field.
    (manifest,) = kube.created
    job = kubernetes_backend._absolute(_job(work))
    assert manifest == image_trainer_job_manifest(job, backend.config, digests)
    typed = k8s.V1Job.from_dict(manifest)  # the official client's model holds every field unchanged
    assert k8s.ApiClient().sanitize_for_serialization(typed) == manifest
    spec = manifest["spec"]
    assert spec["activeDeadlineSeconds"] == math.ceil(TRAINER.timeout_s or 0) == 90
    assert spec["backoffLimit"] == 0  # Temporal owns retries
    template = spec["template"]
    pod_spec = template["spec"]

    # The NetworkPolicy: the tenant-trainer policy (no ingress, no egress) selects the pod, the built-in
    # trainer's (DNS, artifact store, database) does not.
    labels = template["metadata"]["labels"]
    assert labels == manifest["metadata"]["labels"]
    assert labels == {**TENANT_TRAINER_POD_LABELS, TENANT_LABEL: "acme", MODEL_LABEL: "yield"}
    assert _policy_selector("networkpolicy-tenant-trainer.yaml").items() <= labels.items()
    assert not _policy_selector("networkpolicy-training.yaml").items() <= labels.items()

    # No token, no API rights, no service links; never restarted in place.
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["serviceAccountName"] == "evolution-training"
    assert pod_spec["enableServiceLinks"] is False
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod_spec["volumes"] == [
        {"name": "work", "persistentVolumeClaim": {"claimName": "evolution-work"}},
        {"name": "input", "emptyDir": {"sizeLimit": "20Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]

    # The staging step: our image, our module, the digests the worker took, the job's input directory read-only.
    (stage,) = pod_spec["initContainers"]
    assert stage["name"] == "stage-input" and stage["image"] == OUR_IMAGE
    assert stage["command"] == [
        "python",
        "-m",
        "evolution.training.stage_input",
        "--from",
        "/evolution/shared-input",
        "--to",
        "/evolution/input",
        f"--expect=snapshot.parquet=sha256:{digests['snapshot.parquet']}",
        f"--expect=schema.json=sha256:{digests['schema.json']}",
        f"--expect=config.json=sha256:{digests['config.json']}",
    ]
    assert stage["volumeMounts"] == [
        {
            "name": "work",
            "mountPath": "/evolution/shared-input",
            "subPath": "acme/yield-run-1/input",
            "readOnly": True,
        },
        {"name": "input", "mountPath": "/evolution/input", "readOnly": False},
        {"name": "tmp", "mountPath": "/tmp", "readOnly": False},
    ]
    assert stage["securityContext"] == RESTRICTED
    assert stage["resources"] == {
        "requests": {"cpu": "500m", "memory": "256Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }

    # The tenant's container: its image by digest, its command, its args substituted and escaped.
    (train,) = pod_spec["containers"]
    assert train["name"] == "train"
    assert train["image"] == TENANT_IMAGE and train["imagePullPolicy"] == "IfNotPresent"
    assert train["command"] == ["yield-trainer"]
    assert train["args"] == [
        "--input",
        "/evolution/input",
        "--output=/evolution/output",
        "--note",
        "costs $$5 and $$(HOME), kept as written",
    ]
    assert "workingDir" not in train  # the image's own
    assert {e["name"]: e["value"] for e in train["env"]} == {
        **THREAD_CAPS,
        "EVOLUTION_INPUT_DIR": "/evolution/input",
        "EVOLUTION_OUTPUT_DIR": "/evolution/output",
        "EVOLUTION_TRAINING_CONTRACT": CONTRACT,
        "EVOLUTION_SEED": "42",
        "PYTHONHASHSEED": "0",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
    }
    assert train["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "500m", "memory": "1Gi"},
    }
    assert train["volumeMounts"] == [
        {"name": "input", "mountPath": "/evolution/input", "readOnly": True},
        {
            "name": "work",
            "mountPath": "/evolution/output",
            "subPath": "acme/yield-run-1/output",
            "readOnly": False,
        },
        {"name": "tmp", "mountPath": "/tmp", "readOnly": False},
    ]
    assert train["securityContext"] == RESTRICTED


async def test_the_command_trainer_of_the_local_backends_tests_runs_unchanged_as_an_image_job(
    kube: FakeKube, work: Path
) -> None:
    _write_inputs(work, with_crop=False)
    trainer = ImageTrainer(image=LINEAR_IMAGE, command=["linear-trainer"], timeout_s=60)
    result = await _backend(kube, work).run(_job(work, trainer))

    assert result.status == "succeeded", (result.error, result.log_tail)
    assert set(result.output_files) == {"model.onnx", "metrics.json"} and result.metrics["rows"] == ROWS
    assert f"read {ROWS} rows, seed 42" in result.log_tail and "wrote model.onnx" in result.log_tail
    model = (_job_dir(work) / "output" / "model.onnx").read_bytes()
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (prediction,) = session.run(None, {"rain_mm": np.array([[10.0], [70.0]])})
    assert np.isfinite(prediction).all() and prediction[1][0] > prediction[0][0]  # more rain, more yield
    (manifest,) = kube.created
    assert manifest["spec"]["template"]["spec"]["containers"][0]["image"] == LINEAR_IMAGE


async def test_an_input_changed_on_the_shared_volume_after_the_worker_hashed_it_never_reaches_the_trainer(
    kube: FakeKube, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    input_dir = _write_inputs(work)
    hashed = kubernetes_backend.contract_input_digests

    def hash_then_tamper(directory: Path) -> dict[str, str]:
        digests = hashed(directory)
        with (input_dir / "config.json").open("a") as fh:  # someone else with the claim mounted, just after
            fh.write(" ")
        return digests

    monkeypatch.setattr(kubernetes_backend, "contract_input_digests", hash_then_tamper)
    result = await _backend(kube, work).run(_job(work))

    assert result.status == "failed" and result.exit_code == 1
    assert result.error is not None
    assert "never started" in result.error and "stage-input" in result.error, result.error
    assert "config.json" in result.log_tail and "changed on the shared volume" in result.log_tail
    (pod,) = kube.pods(NAMESPACE, job_name(JOB_ID))
    assert pod["status"]["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert list((_job_dir(work) / "output").iterdir()) == []  # the tenant's code never ran


async def test_a_trainer_that_exits_non_zero_fails_the_run_with_its_last_words(
    kube: FakeKube, work: Path
) -> None:
    _write_inputs(work)
    failing = TRAINER.model_copy(update={"args": ["--fail", "no rain column today"]})
    result = await _backend(kube, work).run(_job(work, failing))

    assert result.status == "failed" and result.exit_code == 3
    assert result.error is not None and "exited with code 3" in result.error
    assert "giving up: no rain column today" in result.log_tail


async def test_a_symbolic_link_left_as_the_model_is_refused_not_followed(kube: FakeKube, work: Path) -> None:
    _write_inputs(work)
    secret = work / "acme" / "other-job" / "output" / "model.onnx"  # someone else's file on the same volume
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"another job's model")
    linking = TRAINER.model_copy(update={"args": ["--link-to", str(secret)]})
    result = await _backend(kube, work).run(_job(work, linking))

    assert result.status == "failed" and result.output_files == {}
    assert result.error is not None and "symbolic link" in result.error


async def test_a_tag_only_image_never_reaches_a_manifest_or_the_api_server(
    kube: FakeKube, work: Path
) -> None:
    tagged = "registry.example.com/acme/yield-trainer:latest"
    with pytest.raises(ValidationError, match="not pinned"):  # the definition refuses it
        ImageTrainer(image=tagged)
    _write_inputs(work)
    # A trainer that skipped validation (model_copy does not validate) is refused by the manifest builder.
    unvalidated = TRAINER.model_copy(update={"image": tagged})
    with pytest.raises(InvalidInput, match="not pinned by digest"):
        await _backend(kube, work).run(_job(work, unvalidated))
    assert kube.requests == [] and kube.created == []


async def test_a_retry_over_other_input_data_does_not_adopt_the_earlier_job(
    kube: FakeKube, work: Path
) -> None:
    _write_inputs(work, seed=3)
    backend = _backend(kube, work)
    quick = TRAINER.model_copy(
        update={"args": ["--fail", "first attempt"]}
    )  # its Job stays, whatever the end
    assert (await backend.run(_job(work, quick))).status == "failed"
    _write_inputs(
        work, seed=4
    )  # the same job over other rows: the earlier Job must not be taken for this one
    with pytest.raises(Conflict, match=job_name(JOB_ID)):
        await backend.run(_job(work, quick))
    assert len(kube.created) == 1


async def test_a_command_trainer_is_left_to_the_local_backend(kube: FakeKube, work: Path) -> None:
    _write_inputs(work)
    command = CommandTrainer(argv=["python", "train.py"])
    with pytest.raises(TrainingFailed, match="needs the local backend"):
        await _backend(kube, work).run(_job(work, command))
    assert kube.requests == []
