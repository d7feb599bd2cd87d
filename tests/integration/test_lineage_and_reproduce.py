"""Lineage (issue 15, item 4): the signed manifest binds the trainer's identity; `evolution versions --lineage` shows
it; `evolution verify --reproduce TENANT MODEL VERSION` re-runs the trainer on the same snapshot and seed.

Candidates are trained by the real CandidateBuilder through the real local backend (command trainers are the small
scripts of tests/support/contract_trainers.py), recorded as VALIDATED with their signed manifest as the workflow
would, and the CLI runs as a real process.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evolution.canonical import canonical_json, sha256_hex
from evolution.cli.main import app
from evolution.demo.scenario import Scenario
from evolution.integrity.manifest import (
    MANIFEST_SCHEMA,
    MANIFEST_SCHEMA_V2,
    SignedManifest,
    build_manifest_from_dir,
    sign_manifest,
    verify_manifest,
)
from evolution.lifecycle import ModelState, TransitionRequest, VersionChanges, VersionView
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.registry.model_definitions import ImageTrainer, ModelDefinition
from evolution.security import Principal
from evolution.timeutil import utcnow
from evolution.training.lineage import BUILTIN_TRAINER_NAME, trainer_identity
from tests.support.contract_trainers import ADMIN, command_definition, write_trainer
from tests.support.scenario import seed_tenant

EVOLUTION = str(Path(sys.executable).parent / "evolution")
SYSTEM = Principal.system("acme")
IMAGE = "registry.example.com/acme/yield-trainer@sha256:" + "ab" * 32


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = build_services(Settings(home=tmp_path / "home", training_memory_limit_mb=None))
    seed_tenant(svc, Scenario(tenant_id="acme", history_rows=600))
    svc.snapshots.seal(SYSTEM, "acme", utcnow())
    yield svc
    svc.close()


async def trained(
    services: Services, definition: ModelDefinition | None = None, seed: int = 42
) -> VersionView:
    """One candidate trained by the builder under ``definition`` and recorded VALIDATED with its manifest."""
    if definition is not None:
        services.model_definitions.define(ADMIN, "acme", "yield", definition)
    version = services.registry.register_version(SYSTEM, "acme", "yield", uuid.uuid4().hex)
    version = move(services, version, ModelState.TRAINING)
    out = await services.candidate_builder().train(
        "acme", "yield", version.id, seed, f"run-{uuid.uuid4().hex}"
    )
    changes = VersionChanges(
        model_hash=out.model_hash,
        manifest=out.signed_manifest,
        metrics=out.metrics,
        dataset_snapshot_id=out.snapshot_id,
    )
    return move(services, version, ModelState.VALIDATED, changes)


def move(
    services: Services, version: VersionView, state: ModelState, changes: VersionChanges | None = None
) -> VersionView:
    request = TransitionRequest(
        version_id=version.id,
        to_state=state,
        expected_version=version.lock_version,
        request_id=uuid.uuid4().hex,
        changes=changes,
    )
    return services.registry.transition(SYSTEM, request).version


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def cli(services: Services, *args: str) -> Ran:
    """The `evolution` command in this process (in a thread: it runs its own event loop)."""
    env = {"EVOLUTION_HOME": str(services.settings.home)}
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
    return Ran(result.exit_code, result.stdout, result.stderr)


def cli_process(services: Services, *args: str) -> subprocess.CompletedProcess[str]:
    """The `evolution` command as a user runs it: its own process, its exit code, its stderr."""
    env = {**os.environ, "EVOLUTION_HOME": str(services.settings.home)}
    return subprocess.run([EVOLUTION, *args], env=env, capture_output=True, text=True, timeout=300)


def signed_of(version: VersionView) -> SignedManifest:
    return SignedManifest.model_validate(version.manifest)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- the manifest
async def test_a_builtin_training_binds_the_builtin_trainer_and_reproduces(services: Services) -> None:
    version = await trained(services)
    manifest = signed_of(version).manifest
    assert manifest.schema_ == MANIFEST_SCHEMA_V2
    assert manifest.trainer_identity is not None
    assert manifest.trainer_identity.model_dump(exclude_defaults=True) == {
        "kind": "builtin",
        "name": BUILTIN_TRAINER_NAME,
    }
    assert b'"trainer_identity":{' in manifest.canonical()  # signed, not beside the signature

    reproduced = await cli(services, "verify", "--reproduce", "acme", "yield", str(version.number))
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr
    assert "model.pkl: same" in reproduced.stdout and "model.json: same" in reproduced.stdout
    assert reproduced.stdout.strip().endswith("reproduced: digests match")


async def test_a_command_training_binds_its_argv_and_code_file_digests_and_versions_lineage_shows_them(
    services: Services, tmp_path: Path
) -> None:
    script = write_trainer(tmp_path, "linear")
    version = await trained(services, command_definition(script), seed=7)
    signed = signed_of(version)
    manifest = signed.manifest
    identity = manifest.trainer_identity
    assert identity is not None and identity.kind == "command"
    assert identity.argv == [sys.executable, str(script)]  # as defined, before {input}/{output} substitution
    assert [(c.path, c.sha256) for c in identity.code_files] == [(str(script), sha256_of(script))]
    assert identity.contract == "evolution-training/1" and identity.image_digest is None
    assert manifest.seed == 7
    assert manifest.training_config["holdout"] == {"fraction": 0.2, "split_keys": ["request_id"]}
    assert manifest.training_config["snapshot"] == {
        "id": manifest.dataset_snapshot_id,
        "merkle_root": manifest.dataset_merkle_root,
    }
    assert {f.name for f in manifest.files} == {
        "model.onnx",
        "onnx_card.json",
        "metrics.json",
        "baseline.json",
    }
    verify_manifest(signed, services.keyring)

    shown = await cli(services, "versions", "--tenant", "acme", "--model", "yield", "--lineage")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"yield v{version.number}  VALIDATED" in text
    assert f"snapshot  {manifest.dataset_snapshot_id}  merkle root {manifest.dataset_merkle_root}" in text
    assert "seed      7" in text
    assert f"trainer   command {sys.executable} {script}" in text
    assert f"code      {script}  sha256 {sha256_of(script)}" in text
    assert f"config    sha256 {sha256_hex(canonical_json(manifest.training_config))}" in text
    assert f"manifest  {MANIFEST_SCHEMA_V2}" in text and "(verified)" in text


async def test_an_image_trainer_is_identified_by_its_digest_and_is_not_re_run_locally(
    services: Services, tmp_path: Path
) -> None:
    identity = trainer_identity(ImageTrainer(image=IMAGE, command=["python"], args=["/app/train.py"]))
    assert identity.model_dump(exclude_defaults=True) == {
        "kind": "image",
        "contract": "evolution-training/1",
        "argv": ["python", "/app/train.py"],
        "image": IMAGE,
        "image_digest": "sha256:" + "ab" * 32,
    }
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(b"stand-in bytes: signing does not read them")
    manifest = build_manifest_from_dir(
        model_dir,
        tenant="acme",
        model_name="yield",
        dataset_snapshot_id="ds-1",
        dataset_merkle_root="0" * 64,
        training_config={"seed": 1},
        seed=1,
        trainer=identity.describe(),
        store=services.store,
        trainer_identity=identity,
    )
    signed = sign_manifest(manifest, services.signer)
    assert manifest.schema_ == MANIFEST_SCHEMA_V2 and b"sha256:" + b"ab" * 32 in manifest.canonical()
    version = services.registry.register_version(SYSTEM, "acme", "yield", uuid.uuid4().hex)
    version = move(services, version, ModelState.TRAINING)
    changes = VersionChanges(model_hash=signed.digest, manifest=signed.model_dump(mode="json", by_alias=True))
    move(services, version, ModelState.VALIDATED, changes)

    shown = await cli(services, "versions", "--tenant", "acme", "--lineage")
    assert f"trainer   image {IMAGE} python /app/train.py" in shown.stdout
    assert f"image     sha256:{'ab' * 32}" in shown.stdout
    refused = await cli(services, "verify", "--reproduce", "acme", "yield", str(version.number))
    assert refused.returncode == 2 and "Kubernetes backend" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_manifest_signed_before_lineage_keeps_its_digest_and_verifies(
    services: Services, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.json").write_text("{}")
    old = build_manifest_from_dir(
        model_dir,
        tenant="acme",
        model_name="yield",
        dataset_snapshot_id="ds-1",
        dataset_merkle_root="0" * 64,
        training_config={"alpha": 1},
        seed=3,
        trainer="sklearn-ridge/1",
    )
    assert old.schema_ == MANIFEST_SCHEMA and old.trainer_identity is None
    # Exactly the JSON v1 signed, from before the field existed: the same bytes, the same digest.
    as_signed_then = {k: v for k, v in old.model_dump(mode="json", by_alias=True).items()}
    assert "trainer_identity" not in as_signed_then
    assert old.canonical() == canonical_json(as_signed_then)
    signed = sign_manifest(old, services.signer)
    reread = SignedManifest.model_validate_json(signed.model_dump_json())
    assert reread.digest == signed.digest
    verify_manifest(reread, services.keyring)


# ------------------------------------------------------------------------------------------------ reproduce
async def test_verify_reproduce_re_runs_a_deterministic_command_trainer_and_the_digests_match(
    services: Services, tmp_path: Path
) -> None:
    script = write_trainer(tmp_path, "linear")
    version = await trained(services, command_definition(script))
    # What the definition says now does not matter: the manifest says what ran.
    services.model_definitions.define(ADMIN, "acme", "yield", ModelDefinition())

    reproduced = await cli(services, "verify", "--reproduce", "acme", "yield", str(version.number))
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr
    onnx = next(e for e in signed_of(version).manifest.files if e.name == "model.onnx")
    assert f"model.onnx: same  signed {onnx.sha256}  reproduced {onnx.sha256}" in reproduced.stdout
    assert "metrics.json: same" in reproduced.stdout
    assert reproduced.stdout.strip().endswith("reproduced: digests match")


async def test_verify_reproduce_names_the_files_that_differ_when_the_output_no_longer_matches(
    services: Services, tmp_path: Path
) -> None:
    knob = tmp_path / "knob.txt"  # read by the trainer, but not one of its listed code files
    knob.write_text("1.0")
    script = write_trainer(tmp_path, "knob_linear", KNOB_FILE=str(knob))
    version = await trained(services, command_definition(script))
    knob.write_text("1.5")

    reproduced = cli_process(services, "verify", "--reproduce", "acme", "yield", str(version.number))
    assert reproduced.returncode == 1, reproduced.stdout + reproduced.stderr
    assert "model.onnx: DIFFERS" in reproduced.stdout and "metrics.json: DIFFERS" in reproduced.stdout
    assert "not reproduced: metrics.json, model.onnx differ" in reproduced.stdout
    assert "Traceback" not in reproduced.stderr


async def test_verify_reproduce_refuses_to_run_a_trainer_whose_code_changed_and_names_the_file(
    services: Services, tmp_path: Path
) -> None:
    script = write_trainer(tmp_path, "linear")
    version = await trained(services, command_definition(script))
    signed_digest = sha256_of(script)
    script.write_text(script.read_text() + "\n# a change after training\n")

    reproduced = await cli(services, "verify", "--reproduce", "acme", "yield", str(version.number))
    assert reproduced.returncode == 1, reproduced.stdout + reproduced.stderr
    assert f"code file {script}: signed sha256 {signed_digest}, now {sha256_of(script)}" in reproduced.stdout
    assert "not reproduced" in reproduced.stdout and "reproduced: digests match" not in reproduced.stdout
