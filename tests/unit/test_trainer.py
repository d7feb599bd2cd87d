from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from evolution.demo.synthetic import CATEGORICAL, FEATURES, TARGET, DriftSpec, generate_rows
from evolution.errors import InsufficientData, IntegrityViolation, InvalidInput
from evolution.training.trainer import (
    MODEL_JSON,
    MODEL_PICKLE,
    TrainedModel,
    TrainingConfig,
    holdout_mask,
    load_model,
    train,
)

REPO = Path(__file__).resolve().parents[2]
START = datetime(2024, 1, 1, tzinfo=UTC)
CONFIG = TrainingConfig(features=FEATURES, categorical=sorted(CATEGORICAL), target=TARGET)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return generate_rows(2500, seed=21, start=START)


@pytest.fixture(scope="module")
def model(rows: list[dict[str, Any]]) -> TrainedModel:
    return train(rows, CONFIG, seed=7)


def _sha256_files(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_save_writes_exactly_model_json_and_model_pkl(model: TrainedModel, tmp_path: Path) -> None:
    paths = model.save(tmp_path / "m")
    assert sorted(p.name for p in paths) == [MODEL_JSON, MODEL_PICKLE]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [MODEL_JSON, MODEL_PICKLE]


def test_model_json_is_canonical_with_config_encoders_metrics_and_stats(
    model: TrainedModel, tmp_path: Path
) -> None:
    raw = model.to_files()[MODEL_JSON]
    meta = json.loads(raw)
    assert raw == json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert meta["config"]["features"] == FEATURES and meta["seed"] == 7
    assert meta["encoders"]["crop"] == ["maize", "soy", "wheat"]
    assert set(meta["metrics"]) >= {
        "holdout_mae",
        "holdout_rmse",
        "n_train",
        "n_holdout",
        "holdout_abs_error",
    }
    assert set(meta["feature_stats"]) == {*FEATURES, TARGET}
    assert len(meta["feature_stats"]["rain_mm"]["deciles"]) == 9


def test_same_data_and_seed_give_byte_identical_files_in_one_process(
    rows: list[dict[str, Any]], model: TrainedModel, tmp_path: Path
) -> None:
    again = train(rows, CONFIG, seed=7)
    first = _sha256_files(model.save(tmp_path / "a"))
    second = _sha256_files(again.save(tmp_path / "b"))
    assert first == second
    assert first == model.file_digests()


def test_row_order_does_not_change_the_model(rows: list[dict[str, Any]], model: TrainedModel) -> None:
    shuffled = list(rows)
    random.Random(3).shuffle(shuffled)
    assert train(shuffled, CONFIG, seed=7).to_files() == model.to_files()


_SUBPROCESS_TRAIN = """
import json, sys
from datetime import UTC, datetime
from evolution.demo.synthetic import CATEGORICAL, FEATURES, TARGET, generate_rows
from evolution.training.trainer import TrainingConfig, train
rows = generate_rows(2500, seed=21, start=datetime(2024, 1, 1, tzinfo=UTC))
config = TrainingConfig(features=FEATURES, categorical=sorted(CATEGORICAL), target=TARGET)
paths = train(rows, config, seed=7).save(sys.argv[1])
import hashlib
print(json.dumps({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}))
"""


def test_same_data_and_seed_give_byte_identical_files_in_two_subprocesses(
    model: TrainedModel, tmp_path: Path
) -> None:
    digests = []
    for hash_seed in ("1", "2"):  # different str hashing and default thread counts: neither may matter
        env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
        env |= {"PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS_TRAIN, str(tmp_path / hash_seed)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        digests.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert digests[0] == digests[1] == model.file_digests()


def test_holdout_is_chosen_by_hash_so_it_is_independent_of_row_order(rows: list[dict[str, Any]]) -> None:
    mask = holdout_mask(rows, CONFIG)
    order = list(range(len(rows)))
    random.Random(5).shuffle(order)
    shuffled_mask = holdout_mask([rows[i] for i in order], CONFIG)
    np.testing.assert_array_equal(shuffled_mask, mask[order])
    assert 0.16 < mask.mean() < 0.24


def test_metrics_are_the_errors_on_the_held_out_rows(rows: list[dict[str, Any]], model: TrainedModel) -> None:
    mask = holdout_mask(rows, CONFIG)
    held_out = [r for r, m in zip(rows, mask, strict=True) if m]
    errors = np.abs(model.predict(held_out) - np.array([r[TARGET] for r in held_out]))
    metrics = model.metrics
    assert metrics.n_holdout == len(held_out) and metrics.n_train == len(rows) - len(held_out)
    assert metrics.holdout_mae == pytest.approx(errors.mean(), rel=1e-12)
    assert metrics.holdout_rmse == pytest.approx(np.sqrt(np.mean(errors**2)), rel=1e-12)
    assert metrics.holdout_abs_error.mean == pytest.approx(errors.mean(), rel=1e-12)
    assert metrics.holdout_abs_error.var == pytest.approx(errors.var(ddof=1), rel=1e-9)
    assert metrics.train_mae < metrics.holdout_mae < 0.6


def test_candidate_trained_after_drift_beats_the_old_model_on_post_drift_holdout() -> None:
    at = START + timedelta(hours=2500)
    data = generate_rows(5000, seed=31, start=START, drift=DriftSpec(at=at))
    before, after = data[:2500], data[2500:]
    old = train(before, CONFIG, seed=1)
    new = train(after, CONFIG, seed=1)
    held_out = [r for r, m in zip(after, holdout_mask(after, CONFIG), strict=True) if m]
    y = np.array([r[TARGET] for r in held_out])
    old_mae = np.mean(np.abs(old.predict(held_out) - y))
    new_mae = np.mean(np.abs(new.predict(held_out) - y))
    assert new_mae < 0.7 * old_mae, (new_mae, old_mae)


def test_load_model_round_trips_from_a_directory_and_from_bytes(
    rows: list[dict[str, Any]], model: TrainedModel, tmp_path: Path
) -> None:
    model.save(tmp_path)
    expected = model.predict(rows[:200])
    for source in (tmp_path, model.to_files()):
        loaded = load_model(source)
        np.testing.assert_array_equal(loaded.predict(rows[:200]), expected)
        assert loaded.to_files() == model.to_files()


def test_load_model_refuses_missing_files_and_foreign_payloads(model: TrainedModel) -> None:
    files = model.to_files()
    with pytest.raises(InvalidInput, match=MODEL_PICKLE):
        load_model({MODEL_JSON: files[MODEL_JSON]})
    import pickle

    with pytest.raises(IntegrityViolation, match="payload"):
        load_model({**files, MODEL_PICKLE: pickle.dumps({"format": "other"})})
    with pytest.raises(IntegrityViolation, match="not valid JSON"):
        load_model({**files, MODEL_JSON: b"{"})


def test_predict_treats_unseen_categories_and_absent_features_as_missing(model: TrainedModel) -> None:
    rows: list[dict[str, Any]] = [
        {"crop": "barley", "soil_texture": "peat", "rain_mm": 400.0, "field_id": "x", "event_time": "t"},
        {"nitrogen_kg_ha": 150.0},
    ]
    predictions = model.predict(rows)
    assert predictions.shape == (2,) and np.isfinite(predictions).all()
    assert model.predict([]).shape == (0,)


def test_train_names_a_missing_column(rows: list[dict[str, Any]]) -> None:
    without_target = [{k: v for k, v in r.items() if k != TARGET} for r in rows[:300]]
    with pytest.raises(InvalidInput, match=TARGET):
        train(without_target, CONFIG, seed=0)


def test_train_refuses_too_few_labelled_rows(rows: list[dict[str, Any]]) -> None:
    with pytest.raises(InsufficientData, match="training rows"):
        train(rows[:10], CONFIG, seed=0)
    unlabelled = [{**r, TARGET: None} for r in rows[:500]]
    with pytest.raises(InsufficientData):
        train(unlabelled, CONFIG, seed=0)


def test_rows_without_a_target_are_dropped_and_counted(rows: list[dict[str, Any]]) -> None:
    data = [{**r, TARGET: None} if i % 50 == 0 else r for i, r in enumerate(rows[:1000])]
    trained = train(data, CONFIG.model_copy(update={"max_iter": 20}), seed=0)
    assert trained.metrics.n_dropped_missing_target == 20
    assert trained.metrics.n_train + trained.metrics.n_holdout == 980


def test_train_accepts_columns_as_well_as_rows(rows: list[dict[str, Any]], model: TrainedModel) -> None:
    from evolution.demo.synthetic import to_columns

    assert train(to_columns(rows), CONFIG, seed=7).to_files() == model.to_files()


def test_config_refuses_inconsistent_feature_lists() -> None:
    with pytest.raises(ValidationError, match="not in features"):
        TrainingConfig(features=["a"], categorical=["b"], target="y")
    with pytest.raises(ValidationError, match="also listed as a feature"):
        TrainingConfig(features=["a", "y"], target="y")
    with pytest.raises(ValidationError, match="duplicates"):
        TrainingConfig(features=["a", "a"], target="y")
