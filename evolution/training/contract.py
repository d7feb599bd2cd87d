"""The training contract ``evolution-training/1`` on our side: names, what config.json and schema.json say, the split.

A trainer that follows the contract (``docs/bring-your-own-model.md``) reads three files from its input directory and
writes ``model.onnx`` (and optionally ``metrics.json``) into its output directory. This module is the pure part:
the constants both sides agree on, the two JSON documents, and which rows are held out. Writing the input directory
is :mod:`evolution.training.contract_input`; judging the output directory is :mod:`evolution.training.contract_output`.

The held-out split is the built-in trainer's (a hash of each row's split keys), so a row held out for one model is
held out for every model whatever trained it, and validation against the champion stays fair. Held-out rows are
never given to the trainer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evolution.registry.model_definitions import FeatureSpec, ModelDefinition
from evolution.training.columns import as_columns, holdout_mask_from_digests, split_digests

CONTRACT: Final = "evolution-training/1"

INPUT_DIR_ENV: Final = "EVOLUTION_INPUT_DIR"
OUTPUT_DIR_ENV: Final = "EVOLUTION_OUTPUT_DIR"
CONTRACT_ENV: Final = "EVOLUTION_TRAINING_CONTRACT"
SEED_ENV: Final = "EVOLUTION_SEED"

SNAPSHOT_FILE: Final = "snapshot.parquet"
SCHEMA_FILE: Final = "schema.json"
CONFIG_FILE: Final = "config.json"
MODEL_FILE: Final = "model.onnx"
METRICS_FILE: Final = "metrics.json"
MAX_METRICS_BYTES: Final = 64 * 1024

OUTCOME_COLUMN: Final = "actual"
"""Where a snapshot row keeps its outcome; the trainer sees it under the definition's target name."""

HOLDOUT_KEY: Final = "holdout"
"""The entry of a contract manifest's training_config that records the split (config.json does not carry it)."""


class HoldoutSplit(BaseModel):
    """Which rows are held out: those whose split-key digest falls in the lowest ``fraction``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    split_keys: list[str] = Field(default_factory=lambda: ["request_id"], min_length=1)

    def mask(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """True for the held-out rows (the same rows :func:`evolution.training.trainer.holdout_mask` picks)."""
        columns = as_columns(rows, self.split_keys, self.split_keys)
        return holdout_mask_from_digests(split_digests(columns, self.split_keys), self.fraction)


def split_rows(
    rows: Sequence[Mapping[str, Any]], split: HoldoutSplit
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(training rows, held-out rows), each in the snapshot's order."""
    mask = split.mask(rows)
    training = [row for row, held in zip(rows, mask, strict=True) if not held]
    held_out = [row for row, held in zip(rows, mask, strict=True) if held]
    return training, held_out


def schema_document(features: Sequence[FeatureSpec], target: str) -> dict[str, Any]:
    """schema.json: the Parquet file's columns in order, each feature with its type, then the target."""
    columns: list[dict[str, str]] = [{"name": f.name, "type": f.type} for f in features]
    columns.append({"name": target, "type": "target"})
    return {"columns": columns}


def config_document(
    definition: ModelDefinition,
    *,
    tenant: str,
    model_name: str,
    seed: int,
    rows: int,
    snapshot_id: str,
    merkle_root: str,
) -> dict[str, Any]:
    """config.json: what the definition declared, the seed, the row count and the snapshot it was cut from."""
    return {
        "contract": CONTRACT,
        "tenant": tenant,
        "model_name": model_name,
        "features": [f.model_dump(mode="json") for f in definition.features],
        "target": definition.target,
        "loss": definition.loss,
        "hyperparameters": definition.hyperparameters,
        "seed": seed,
        "rows": rows,
        "snapshot": {"id": snapshot_id, "merkle_root": merkle_root},
    }


def training_config_record(config: Mapping[str, Any], split: HoldoutSplit) -> dict[str, Any]:
    """What a contract manifest binds as its training_config: config.json as given, and the split."""
    return {**config, HOLDOUT_KEY: split.model_dump(mode="json")}


def config_from_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """config.json back from a manifest's training_config (for a reproduction: the very document the trainer read)."""
    return {key: value for key, value in record.items() if key != HOLDOUT_KEY}


def features_of(config: Mapping[str, Any]) -> list[FeatureSpec]:
    """The features a config.json declares, with their types."""
    return [FeatureSpec.model_validate(feature) for feature in config["features"]]
