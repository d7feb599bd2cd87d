"""Lineage and reproduction of a model version (``evolution versions --lineage``, ``evolution verify --reproduce``).

A version's signed manifest binds the snapshot (id and Merkle root), the training configuration, the seed and,
from manifest v2 on, the trainer's identity. :func:`lineage_of` reads that back, signature checked first.

:func:`reproduce` runs the version's trainer again on the same snapshot and seed and compares what it writes with
the signed digests. The snapshot's rows are loaded only after they verify against its signed Merkle root, which
must be the one the manifest binds. The built-in trainer runs in-process (its bytes do not depend on where it
runs: one thread, canonical pickling); a command trainer runs through the local backend on an input directory
staged exactly as the training staged it (same rows, same held-out split, the very config.json it read), and only
if each of its code files still has the digest the manifest signed: a changed file is named instead. An image
trainer runs on a cluster, not here, and is refused with that reason.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any

from evolution.canonical import canonical_json, sha256_hex
from evolution.errors import IntegrityViolation, InvalidInput, NotFound
from evolution.integrity.manifest import SignedManifest, verify_manifest
from evolution.integrity.trainer_identity import TrainerIdentity
from evolution.lifecycle import VersionView
from evolution.platform.wiring import Services
from evolution.registry.model_definitions import CommandTrainer
from evolution.security import Principal
from evolution.training.candidates import labelled
from evolution.training.compute import ContractRun, TrainingJob
from evolution.training.contract import (
    METRICS_FILE,
    MODEL_FILE,
    config_from_record,
    features_of,
    split_rows,
)
from evolution.training.contract_input import write_input_dir
from evolution.training.formats import holdout_split
from evolution.training.lineage import BUILTIN_TRAINER_NAME, changed_code_files, resolved_argv
from evolution.training.local_backend import LocalSubprocessBackend
from evolution.training.trainer import MODEL_FILES, TrainingConfig, train

# The files a trainer writes (the card and the drift baseline are ours, derived afterwards).
TRAINER_FILES = frozenset({*MODEL_FILES, MODEL_FILE, METRICS_FILE})
# A reproduction is judged by its digests, not by the size limit the definition had then.
REPRODUCTION_MAX_MODEL_MB = 4096


@dataclass(frozen=True)
class Lineage:
    version: VersionView
    signed: SignedManifest
    identity: TrainerIdentity | None
    """None: a v1 manifest, which names its trainer only."""
    config_digest: str
    """SHA-256 of the canonical training configuration the manifest binds."""


@dataclass(frozen=True)
class Reproduction:
    lineage: Lineage
    compared: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    """file name -> (signed sha256, reproduced sha256); None where one side has no such file."""
    refused: list[str] = field(default_factory=list)
    """Why the trainer was not run or did not finish (a changed code file, its failure)."""

    @property
    def differing(self) -> list[str]:
        return sorted(name for name, (signed, again) in self.compared.items() if signed != again)

    @property
    def matched(self) -> bool:
        return not self.refused and bool(self.compared) and not self.differing


def find_version(
    services: Services, principal: Principal, tenant: str, model: str, number: int
) -> VersionView:
    for version in services.registry.list_versions(principal, tenant, model):
        if version.number == number:
            return version
    raise NotFound(f"model {model!r} of tenant {tenant!r} has no version {number}")


def lineage_of(services: Services, version: VersionView) -> Lineage:
    """The version's lineage from its signed manifest; IntegrityViolation if the signature does not verify."""
    if not version.manifest:
        raise InvalidInput(
            f"version {version.number} of {version.model_name} has no signed manifest: {version.why_no_manifest()}"
        )
    try:
        signed = SignedManifest.model_validate(version.manifest)
    except ValueError as error:
        raise IntegrityViolation(
            f"version {version.number}: the signed manifest is malformed: {error}"
        ) from None
    verify_manifest(signed, services.keyring)
    manifest = signed.manifest
    identity = manifest.trainer_identity
    if (
        identity is None and manifest.trainer == BUILTIN_TRAINER_NAME
    ):  # v1, before identities: the same trainer
        identity = TrainerIdentity(kind="builtin", name=BUILTIN_TRAINER_NAME)
    return Lineage(
        version=version,
        signed=signed,
        identity=identity,
        config_digest=sha256_hex(canonical_json(manifest.training_config)),
    )


async def reproduce(
    services: Services, principal: Principal, tenant: str, model: str, number: int
) -> Reproduction:
    """Re-run version ``number``'s trainer on its snapshot and seed; compare the files it writes with the manifest."""
    lineage = lineage_of(services, find_version(services, principal, tenant, model, number))
    identity, manifest = lineage.identity, lineage.signed.manifest
    if identity is None:
        raise InvalidInput(
            f"version {number} was signed by manifest v1, which names its trainer ({manifest.trainer!r}) but not "
            "its identity: there is nothing to re-run"
        )
    if identity.kind == "image":
        raise InvalidInput(
            f"version {number} was trained by the image {identity.image}: reproduce it by running that image "
            "on the Kubernetes backend; this command re-runs built-in and command trainers"
        )
    if identity.kind == "command":
        changed = changed_code_files(identity)
        if changed:
            return Reproduction(lineage=lineage, refused=changed)
    snapshot = services.snapshots.get(principal, manifest.dataset_snapshot_id)
    if snapshot.merkle_root != manifest.dataset_merkle_root:
        raise IntegrityViolation(
            f"snapshot {snapshot.id} has Merkle root {snapshot.merkle_root}, but version {number}'s manifest "
            f"binds {manifest.dataset_merkle_root}"
        )
    rows = labelled(services.snapshots.load_rows(snapshot, services.keyring))  # verified against the root
    signed = {entry.name: entry.sha256 for entry in manifest.files if entry.name in TRAINER_FILES}
    if identity.kind == "builtin":
        again = train(rows, TrainingConfig.model_validate(manifest.training_config), manifest.seed)
        return _compared(lineage, signed, again.file_digests())
    return await _rerun_command(services, lineage, identity, rows, signed)


async def _rerun_command(
    services: Services,
    lineage: Lineage,
    identity: TrainerIdentity,
    rows: list[dict[str, Any]],
    signed: dict[str, str],
) -> Reproduction:
    manifest = lineage.signed.manifest
    config = config_from_record(manifest.training_config)
    training_rows, _ = split_rows(rows, holdout_split(manifest.training_config))
    trainer = CommandTrainer(argv=identity.argv, code_files=[c.path for c in identity.code_files])
    job_dir = services.settings.work_dir / "reproduce" / uuid.uuid4().hex
    try:
        input_dir = job_dir / "input"
        write_input_dir(input_dir, features_of(config), str(config["target"]), training_rows, config)
        job = TrainingJob(
            job_id=f"reproduce-{job_dir.name[:16]}",
            tenant=manifest.tenant,
            model_name=manifest.model_name,
            dataset_path=str(input_dir / "snapshot.parquet"),
            config=TrainingConfig(
                features=[f.name for f in features_of(config)], target=str(config["target"])
            ),
            seed=manifest.seed,
            output_dir=str(job_dir / "output"),
            timeout_s=services.settings.training_timeout_s,
            memory_limit_mb=services.settings.training_memory_limit_mb,
            contract=ContractRun(
                trainer=trainer.model_copy(update={"argv": resolved_argv(trainer)}),
                input_dir=str(input_dir),
                max_model_mb=REPRODUCTION_MAX_MODEL_MB,
            ),
        )
        result = await LocalSubprocessBackend().run(job)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    if result.status != "succeeded":
        last = [line for line in result.log_tail.splitlines() if line.strip()][-5:]
        return Reproduction(
            lineage=lineage,
            refused=[f"the trainer {result.status.replace('_', ' ')}: {result.error}", *last],
        )
    return _compared(lineage, signed, result.output_files)


def _compared(lineage: Lineage, signed: dict[str, str], again: dict[str, str]) -> Reproduction:
    names = sorted(set(signed) | set(again))
    return Reproduction(lineage=lineage, compared={n: (signed.get(n), again.get(n)) for n in names})
