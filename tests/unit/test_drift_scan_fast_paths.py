"""The drift scan's column paths give exactly what the row-by-row code they replaced gave."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from evolution.drift.scanner import _columns, _model_columns, _numeric_if_possible
from evolution.training.trainer import TrainingConfig, train
from tests.support.load_seed import farm_rows


def reference_numeric(values: np.ndarray) -> np.ndarray:
    """The previous implementation, value by value."""
    if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
        return np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    return values


COLUMNS: list[list[Any]] = [
    [1, 2.5, None, -3],
    [None, None],
    [],
    [1.0, True],
    [0, False, None],
    ["loam", None, "clay"],
    [1.5, "2.5"],
    [np.float64(0.25), 7, None],
    [2**63 + 1, 2**53 + 1, 0.1],
]


@pytest.mark.parametrize("values", COLUMNS, ids=[repr(c)[:30] for c in COLUMNS])
def test_numeric_conversion_matches_the_value_by_value_reference(values: list[Any]) -> None:
    column = np.asarray(values, dtype=object)
    fast, slow = _numeric_if_possible(column), reference_numeric(column)
    assert fast.dtype == slow.dtype
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        assert (a is b) or (a == b) or (a != a and b != b)  # NaN equals NaN here


def test_an_integer_beyond_float_range_fails_as_before() -> None:
    column = np.asarray([1, 10**400], dtype=object)
    with pytest.raises(OverflowError):
        reference_numeric(column)
    with pytest.raises(OverflowError):
        _numeric_if_possible(column)


ROW_SETS: dict[str, list[dict[str, Any]]] = {
    "every row has every name": [{"a": 1, "b": "x", "c": None}, {"a": 2.5, "b": None, "c": [1, 2]}],
    "a row lacks a name": [{"a": 1, "b": "x"}, {"a": 2}],
    "no rows": [],
    "one row": [{"a": (1, 2), "b": "x"}],
}


@pytest.mark.parametrize("rows", ROW_SETS.values(), ids=ROW_SETS.keys())
@pytest.mark.parametrize("names", [["a", "b"], ["b"], []], ids=["two names", "one name", "no names"])
def test_columns_equal_picking_each_value_row_by_row(rows: list[dict[str, Any]], names: list[str]) -> None:
    columns = _columns(rows, names)
    assert list(columns) == names
    for name in names:
        assert columns[name].dtype == object and columns[name].shape == (len(rows),)
        assert list(columns[name]) == [row.get(name) for row in rows]


def test_predicting_labelled_columns_equals_predicting_labelled_rows() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    training = farm_rows(400, 3, start, 60.0, 20)
    for row in training:
        row["actual"] = row.pop("yield_t_ha")
    features = [k for k in training[0] if k not in ("event_time", "actual", "field_id")]
    config = TrainingConfig(
        features=features,
        categorical=["crop", "soil_texture", "previous_crop", "tillage"],
        target="actual",
        max_iter=30,
    )
    model = train(training, config, seed=1)

    rows = farm_rows(600, 4, start, 60.0, 20)
    for i, row in enumerate(rows):
        row["actual"] = row.pop("yield_t_ha") if i % 3 else None
        row.pop("slope_pct")  # absent from every row of the window
        if i % 7 == 0:
            row["crop"] = 7  # a number where the model expects text: the category "7" (unseen)
        if i % 11 == 0:
            row.pop("soil_ph")  # absent from some rows
        if i % 13 == 0:
            row["gdd"] = "1520.5"  # text where the model expects a number: converted by the model
    names = [f for f in features if f != "tillage"]  # the baseline's features; the model has one more
    raw = _columns(rows, list(dict.fromkeys([*names, *model.features])))
    numeric = {name: _numeric_if_possible(raw[name]) for name in names}
    labelled = np.flatnonzero([row.get("actual") is not None for row in rows])

    by_columns = model.predict(_model_columns(model, raw, numeric, labelled))
    by_rows = model.predict([row for row in rows if row.get("actual") is not None])
    assert by_columns.shape == (len(labelled),) == (400,)
    np.testing.assert_array_equal(by_columns, by_rows)
