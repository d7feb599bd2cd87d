"""The contract trainer's input table: a declared feature that no row of the snapshot has fails the training by name
(a misspelt feature trained as an all-missing column ended as "worse than the champion", found by a newcomer)."""

from __future__ import annotations

import pytest

from evolution.errors import TrainingFailed
from evolution.registry.model_definitions import FeatureSpec
from evolution.training.contract import OUTCOME_COLUMN
from evolution.training.contract_input import snapshot_table

ROWS = [
    {"rain_mm": 3.0, "crop": "wheat", OUTCOME_COLUMN: 7.1},
    {"rain_mm": 5.0, "crop": None, OUTCOME_COLUMN: 6.4},
    {"crop": "maize", OUTCOME_COLUMN: 8.0},
]


def test_a_feature_in_no_row_of_the_snapshot_fails_the_training_naming_it_and_the_columns_there_are() -> None:
    features = [FeatureSpec(name="rain_mmm"), FeatureSpec(name="crop", type="categorical")]
    with pytest.raises(TrainingFailed) as failed:
        snapshot_table(features, "yield_t_ha", ROWS)
    assert str(failed.value) == (
        "the model definition's feature(s) 'rain_mmm' are in no row of the snapshot (its rows have crop, rain_mm): "
        "correct the definition (evolution model define)"
    )


def test_a_feature_missing_from_some_rows_only_is_trained_with_those_values_missing() -> None:
    features = [FeatureSpec(name="rain_mm"), FeatureSpec(name="crop", type="categorical")]
    table = snapshot_table(features, "yield_t_ha", ROWS)
    assert table.column_names == ["rain_mm", "crop", "yield_t_ha"]
    assert table.column("rain_mm").to_pylist()[:2] == [3.0, 5.0] and table.column("rain_mm").null_count == 1
    assert table.column("crop").to_pylist() == ["wheat", None, "maize"]
    assert table.column("yield_t_ha").to_pylist() == [7.1, 6.4, 8.0]
