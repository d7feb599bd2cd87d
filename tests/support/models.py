"""Puts a really trained, really signed model into a lifecycle state, without running the workflows."""

from __future__ import annotations

import uuid
from pathlib import Path

from evolution.demo.synthetic import TARGET, generate_rows
from evolution.integrity.manifest import build_manifest_from_dir, sign_manifest
from evolution.lifecycle import ModelState, TransitionRequest, VersionChanges, VersionView
from evolution.platform.wiring import Services
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from evolution.training.trainer import TrainingConfig, train

PATH_TO = {
    ModelState.SHADOW: [ModelState.TRAINING, ModelState.VALIDATED, ModelState.SHADOW],
    ModelState.CANARY: [ModelState.TRAINING, ModelState.VALIDATED, ModelState.SHADOW, ModelState.CANARY],
}


def install_model(
    services: Services, tenant: str, work: Path, state: ModelState, seed: int = 1
) -> VersionView:
    system = Principal.system(tenant)
    rows = generate_rows(800, seed, utcnow())
    for i, row in enumerate(rows):
        row["actual"], row["request_id"] = row.pop(TARGET), f"r{i}"
    features = [k for k in rows[0] if k not in ("actual", "request_id", "event_time", "field_id")]
    config = TrainingConfig(
        features=features,
        categorical=["crop", "soil_texture"],
        target="actual",
        split_keys=["request_id"],
        max_iter=30,
    )
    out = work / uuid.uuid4().hex
    train(rows, config, seed).save(out)
    manifest = build_manifest_from_dir(
        out,
        tenant=tenant,
        model_name="yield",
        dataset_snapshot_id="ds-test",
        dataset_merkle_root="0" * 64,
        training_config=config.model_dump(mode="json"),
        seed=seed,
        trainer="test",
        store=services.store,
    )
    signed = sign_manifest(manifest, services.signer)
    services.store.put_bytes(tenant, signed.model_dump_json(by_alias=True).encode())  # as training does
    version = services.registry.register_version(system, tenant, "yield", uuid.uuid4().hex)
    target = ModelState.CANARY if state == ModelState.CHAMPION else state
    for step in PATH_TO[target]:
        changes = None
        if step == ModelState.VALIDATED:
            changes = VersionChanges(
                model_hash=signed.digest, manifest=signed.model_dump(mode="json", by_alias=True)
            )
        version = services.registry.transition(
            system,
            TransitionRequest(
                version_id=version.id,
                to_state=step,
                expected_version=version.lock_version,
                request_id=uuid.uuid4().hex,
                changes=changes,
            ),
        ).version
    if state == ModelState.CHAMPION:
        manager = Principal.for_tenant("maria", Role.MANAGER, tenant)
        version = services.registry.promote(
            manager, version.id, version.lock_version, uuid.uuid4().hex
        ).version
    return version
