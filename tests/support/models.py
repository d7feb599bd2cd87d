"""Puts a really trained, really signed model into a lifecycle state, without running the workflows.

:func:`install_model` installs the built-in format (the built-in trainer's model.json and model.pkl);
:func:`install_onnx_model` an ONNX model as a trainer following the training contract writes it (a scikit-learn
pipeline exported with skl2onnx), with the ``onnx_card.json`` the training runner writes beside it. Both are signed
and stored the way training does.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.base import RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from evolution.demo.synthetic import TARGET, generate_rows
from evolution.integrity.manifest import build_manifest_from_dir, sign_manifest
from evolution.lifecycle import ModelState, TransitionRequest, VersionChanges, VersionView
from evolution.platform.wiring import Services
from evolution.registry.model_definitions import CommandTrainer, FeatureSpec, ModelDefinition
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from evolution.training.formats import ONNX_CARD, ONNX_MODEL, onnx_card
from evolution.training.trainer import TrainingConfig, train

PATH_TO = {
    ModelState.SHADOW: [ModelState.TRAINING, ModelState.VALIDATED, ModelState.SHADOW],
    ModelState.CANARY: [ModelState.TRAINING, ModelState.VALIDATED, ModelState.SHADOW, ModelState.CANARY],
}
CATEGORICAL = ("crop", "soil_texture")


def demo_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Demo events as the snapshot holds them: the target is ``actual``, each row has a ``request_id``."""
    rows = generate_rows(n, seed, utcnow())
    for i, row in enumerate(rows):
        row["actual"], row["request_id"] = row.pop(TARGET), f"r{i}"
    return rows


def demo_features(rows: list[dict[str, Any]]) -> list[str]:
    return [k for k in rows[0] if k not in ("actual", "request_id", "event_time", "field_id")]


def install_model(
    services: Services, tenant: str, work: Path, state: ModelState, seed: int = 1
) -> VersionView:
    rows = demo_rows(800, seed)
    config = TrainingConfig(
        features=demo_features(rows),
        categorical=list(CATEGORICAL),
        target="actual",
        split_keys=["request_id"],
        max_iter=30,
    )
    out = work / uuid.uuid4().hex
    train(rows, config, seed).save(out)
    return register_signed(services, tenant, out, config.model_dump(mode="json"), seed, state)


def onnx_definition(
    features: list[str], categorical: tuple[str, ...] = CATEGORICAL, target: str = "actual"
) -> ModelDefinition:
    """The definition a tenant's administrator would write for a scikit-learn trainer of these features."""
    return ModelDefinition(
        features=[
            FeatureSpec(name=f, type="categorical" if f in categorical else "numeric") for f in features
        ],
        target=target,
        trainer=CommandTrainer(argv=["python", "train.py"]),
    )


def sklearn_pipeline(
    rows: list[dict[str, Any]], definition: ModelDefinition, estimator: RegressorMixin | None = None
) -> Pipeline:
    """What a user's trainer fits: median imputation of numbers and one-hot categories, then a regressor.

    Missing categories are "" in training, as the contract sends them at prediction time.
    """
    numeric = [f.name for f in definition.features if f.type == "numeric"]
    categorical = [f.name for f in definition.features if f.type == "categorical"]
    frame = pd.DataFrame(
        {
            **{
                n: np.array([np.nan if r.get(n) is None else r[n] for r in rows], dtype=np.float64)
                for n in numeric
            },
            **{
                n: np.array(["" if r.get(n) is None else str(r[n]) for r in rows], dtype=object)
                for n in categorical
            },
        }
    )
    preprocess = ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), numeric),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    regressor = (
        estimator
        if estimator is not None
        else GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=0)
    )
    target = np.array([r[definition.target] for r in rows], dtype=np.float64)
    return Pipeline([("preprocess", preprocess), ("regressor", regressor)]).fit(frame, target)


def to_onnx(pipeline: Pipeline, definition: ModelDefinition) -> bytes:
    """The pipeline in ONNX with one input per feature, named as the feature, of shape [N, 1] (the contract)."""
    initial_types: list[tuple[str, Any]] = [
        (f.name, StringTensorType([None, 1]) if f.type == "categorical" else FloatTensorType([None, 1]))
        for f in definition.features
    ]
    return convert_sklearn(pipeline, initial_types=initial_types).SerializeToString()


def write_onnx_model(directory: Path, model: bytes, definition: ModelDefinition) -> Path:
    """model.onnx and the card beside it, as the training runner leaves them to be signed."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ONNX_MODEL).write_bytes(model)
    (directory / ONNX_CARD).write_bytes(onnx_card(definition))
    return directory


def install_onnx_model(
    services: Services,
    tenant: str,
    work: Path,
    state: ModelState,
    seed: int = 1,
    estimator: RegressorMixin | None = None,
) -> VersionView:
    rows = demo_rows(800, seed)
    definition = onnx_definition(demo_features(rows))
    model = to_onnx(sklearn_pipeline(rows, definition, estimator), definition)
    out = write_onnx_model(work / uuid.uuid4().hex, model, definition)
    return register_signed(services, tenant, out, definition.model_dump(mode="json"), seed, state)


def register_signed(
    services: Services,
    tenant: str,
    directory: Path,
    training_config: dict[str, Any],
    seed: int,
    state: ModelState,
) -> VersionView:
    """Sign every file of ``directory`` (stored as training stores them) and walk a new version to ``state``."""
    system = Principal.system(tenant)
    manifest = build_manifest_from_dir(
        directory,
        tenant=tenant,
        model_name="yield",
        dataset_snapshot_id="ds-test",
        dataset_merkle_root="0" * 64,
        training_config=training_config,
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
