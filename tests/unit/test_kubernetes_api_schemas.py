"""Every Kubernetes object we ship or create, checked against the API's published schemas by `kubernetes-validate`.

`kubernetes-validate` carries the OpenAPI-derived JSON schemas of each Kubernetes release; its strict schemas refuse
any field the API does not define, so a misspelt or misplaced field fails here as the API server would refuse it
(or, worse, silently drop it). Checked: every manifest file under deploy/kubernetes, every kustomization as built
(overlays' patches applied), and the training Jobs the Kubernetes backend builds (the built-in runner's and a
tenant's image trainer's), each against every minor version docs/production.md claims to support.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from evolution.registry.model_definitions import ImageTrainer, Resources
from evolution.training.compute import ContractRun, TrainingJob
from evolution.training.kubernetes_image_job import CONTRACT_INPUT_FILES, image_trainer_job_manifest
from evolution.training.kubernetes_manifest import KubernetesBackendConfig, Toleration, build_job
from tests.support.kustomize import K8S, KUSTOMIZATIONS, ROOT, build, load_docs, manifest_files
from tests.unit.test_kubernetes_manifest import RUN_DIR, _job

# The three newest minor releases whose schemas the installed kubernetes-validate ships (Kubernetes itself supports
# the newest three). docs/production.md names the same; raise them together when kubernetes-validate is upgraded.
SUPPORTED_VERSIONS = ("1.35", "1.36", "1.37")
PRODUCTION_DOC = ROOT / "docs" / "production.md"


@pytest.fixture(scope="module", autouse=True)
def _schemas_read_once() -> Iterator[None]:
    # validate() reads and parses its schema files (the shared definitions are megabytes) on every call; they
    # never change, so this module reads each once. The validation itself is the package's own.
    with pytest.MonkeyPatch.context() as patch:
        cached = functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents)
        patch.setattr(kubernetes_validate.utils, "schema_contents", cached)
        yield


def _validate(doc: dict[str, Any], where: str) -> None:
    for version in SUPPORTED_VERSIONS:
        try:
            validated = kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(
                f"{where}: Kubernetes {version} refuses {doc['kind']} at {path or '/'}: {error.message}"
            )
        # A version the package has no schemas for would silently fall back to an older one.
        assert validated == version, f"{where}: validated against {validated}, not {version}"


def test_the_supported_versions_are_the_newest_the_validator_ships_and_the_docs_name_them() -> None:
    shipped = sorted(
        {kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()}
    )
    assert set(SUPPORTED_VERSIONS) <= set(shipped)
    text = PRODUCTION_DOC.read_text(encoding="utf-8")
    named = re.search(r"validated against Kubernetes ([\d., and]+)", text)
    assert named is not None, (
        "docs/production.md must say which Kubernetes versions the manifests are checked for"
    )
    assert re.findall(r"1\.\d+", named.group(1)) == list(SUPPORTED_VERSIONS)


def test_the_validator_is_strict_about_unknown_fields() -> None:
    (namespace,) = load_docs(K8S / "base" / "namespace.yaml")
    bad = copy.deepcopy(namespace)
    bad["metadata"]["lables"] = {"a": "b"}
    with pytest.raises(kubernetes_validate.ValidationError, match="lables"):
        kubernetes_validate.validate(bad, SUPPORTED_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_file_is_valid_for_every_supported_kubernetes_version(path: Path) -> None:
    for doc in load_docs(path):
        _validate(doc, str(path.relative_to(ROOT)))


@pytest.mark.parametrize("kdir", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_kustomization_as_built_is_valid_for_every_supported_kubernetes_version(kdir: Path) -> None:
    for doc in build(kdir):
        _validate(doc, f"{kdir.relative_to(ROOT)} {doc['kind']}/{doc['metadata']['name']}")


# ------------------------------------------------------------------------------------ the Jobs the backend builds

TENANT_IMAGE = "registry.example.com/acme/yield@sha256:" + "e" * 64
DIGESTS = {name: "ab" * 32 for name in CONTRACT_INPUT_FILES}


def _image_job(trainer: ImageTrainer) -> TrainingJob:
    run = ContractRun(trainer=trainer, input_dir=f"{RUN_DIR}/input", max_model_mb=200)
    return _job(output_dir=f"{RUN_DIR}/output", contract=run)


# Every optional part of the Job switched on once, so each is checked against the schema at least once.
FULL_CONFIG: dict[str, Any] = {
    "namespace": "controlled-evolution",
    "gpus": 1,
    "node_selector": {"accelerator": "a100"},
    "tolerations": [Toleration(key="gpu", operator="Exists", effect="NoSchedule")],
    "image_pull_secrets": ["regcred"],
}


@pytest.mark.parametrize("config", [{}, FULL_CONFIG], ids=["defaults", "every-option"])
def test_the_built_in_trainers_job_is_valid_for_every_supported_kubernetes_version(
    config: dict[str, Any],
) -> None:
    manifest = build_job(_job(), KubernetesBackendConfig(**config)).to_manifest()
    _validate(manifest, "build_job")


@pytest.mark.parametrize(
    ("trainer", "config"),
    [
        (ImageTrainer(image=TENANT_IMAGE, command=["train"], args=["{input}", "--out={output}"]), {}),
        (ImageTrainer(image=TENANT_IMAGE, resources=Resources(gpus=1, memory="8Gi")), FULL_CONFIG),
    ],
    ids=["command-and-args", "own-entrypoint-gpu-every-option"],
)
def test_an_image_trainers_job_is_valid_for_every_supported_kubernetes_version(
    trainer: ImageTrainer, config: dict[str, Any]
) -> None:
    manifest = image_trainer_job_manifest(_image_job(trainer), KubernetesBackendConfig(**config), DIGESTS)
    _validate(manifest, "image_trainer_job_manifest")
