"""Writing a contract trainer's input directory: snapshot.parquet, schema.json and config.json.

The rows come from a snapshot already verified against its signed Merkle root (the caller loads them through the
snapshot service, which refuses anything else), and only the training rows: the held-out ones stay with us. The
Parquet file holds one column per declared feature (numeric as float64, categorical as string, a missing value as
null) and the target (float64, from the events' outcome), in the order schema.json lists them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evolution.errors import InvalidInput, TrainingFailed
from evolution.registry.model_definitions import FeatureSpec
from evolution.training.columns import as_columns
from evolution.training.contract import (
    CONFIG_FILE,
    OUTCOME_COLUMN,
    SCHEMA_FILE,
    SNAPSHOT_FILE,
    schema_document,
)


def snapshot_table(
    features: Sequence[FeatureSpec], target: str, rows: Sequence[Mapping[str, Any]]
) -> pa.Table:
    """The training rows as an Arrow table with the contract's column types."""
    names = [f.name for f in features]
    categorical = {f.name for f in features if f.type == "categorical"}
    try:
        columns = as_columns(rows, names, categorical)
    except InvalidInput as error:  # a feature declared numeric holds text
        raise TrainingFailed(f"the snapshot does not fit the model definition: {error}") from None
    absent = [name for name in names if name not in columns]
    if absent and rows:
        # In no row of the whole snapshot: a misspelt or renamed feature, not a sparse one. Trained on, it would be
        # an all-missing column the model learns nothing from, and the run would end as "worse than the champion".
        present = sorted({key for row in rows for key in row} - {OUTCOME_COLUMN})
        raise TrainingFailed(
            f"the model definition's feature(s) {', '.join(repr(a) for a in absent)} are in no row of the snapshot "
            f"(its rows have {', '.join(present)}): correct the definition (evolution model define)"
        )
    arrays: dict[str, pa.Array] = {}
    for spec in features:
        column = columns[spec.name] if rows else np.empty(0, dtype=object)
        if spec.type == "categorical":
            arrays[spec.name] = pa.array([None if v is None else str(v) for v in column], type=pa.string())
        else:
            arrays[spec.name] = pa.array(column.astype(np.float64), type=pa.float64(), from_pandas=True)
    outcome = as_columns(rows, [OUTCOME_COLUMN], ()).get(OUTCOME_COLUMN, np.full(len(rows), np.nan))
    arrays[target] = pa.array(outcome, type=pa.float64(), from_pandas=True)
    return pa.table(arrays)


def write_input_dir(
    input_dir: Path,
    features: Sequence[FeatureSpec],
    target: str,
    rows: Sequence[Mapping[str, Any]],
    config: Mapping[str, Any],
) -> None:
    """Write the three input files into ``input_dir`` (created; it must not exist yet)."""
    input_dir.mkdir(parents=True, exist_ok=False)
    pq.write_table(snapshot_table(features, target, rows), input_dir / SNAPSHOT_FILE)
    (input_dir / SCHEMA_FILE).write_text(json.dumps(schema_document(features, target), indent=2) + "\n")
    (input_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for path in input_dir.iterdir():  # the trainer reads, it does not write here
        path.chmod(0o444)
