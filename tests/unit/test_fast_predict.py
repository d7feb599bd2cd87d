"""The built-in format's fast prediction path gives exactly scikit-learn's numbers, and steps aside when it cannot."""

from __future__ import annotations

import numpy as np
import pytest

from evolution.training.columns import as_columns
from evolution.training.design_matrix import design_matrix
from evolution.training.fast_predict import FastPredictor, fast_predictor
from evolution.training.trainer import TrainingConfig, train
from tests.support.models import CATEGORICAL, demo_features, demo_rows


def _model():  # type: ignore[no-untyped-def]
    rows = demo_rows(600, 3)
    config = TrainingConfig(
        features=demo_features(rows),
        categorical=list(CATEGORICAL),
        target="actual",
        split_keys=["request_id"],
        max_iter=20,
    )
    return train(rows, config, 3)


def test_predictions_are_bit_for_bit_the_estimators_with_missing_and_unseen_values() -> None:
    model = _model()
    rows = demo_rows(2000, 11)
    for row in rows[::7]:
        row["crop"] = "never-seen"
    for row in rows[::5]:
        row["rain_mm"] = None
    for row in rows[::11]:
        row.pop("soil_texture")
    assert model.predict(rows[:1]).shape == (1,)
    assert isinstance(model._fast, FastPredictor)  # the fast path is the one in use
    columns = as_columns(rows, model.config.features, model.config.categorical)
    matrix = design_matrix(columns, model.config, model.encoders, len(rows))
    expected = np.asarray(model.estimator.predict(matrix), dtype=np.float64)
    assert np.array_equal(model.predict(rows), expected)
    assert np.array_equal(np.concatenate([model.predict([r]) for r in rows[:50]]), expected[:50])


def test_a_path_that_differs_on_the_probe_batch_or_fails_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    assert isinstance(fast_predictor(model.estimator), FastPredictor)
    original = FastPredictor.predict
    monkeypatch.setattr(FastPredictor, "predict", lambda self, m: original(self, m) + 1e-12)
    assert fast_predictor(model.estimator) is None
    monkeypatch.setattr(FastPredictor, "__init__", lambda self, e: (_ for _ in ()).throw(AttributeError("x")))
    assert fast_predictor(model.estimator) is None
    assert model.predict(demo_rows(3, 1)).shape == (3,)  # scikit-learn's own path then
