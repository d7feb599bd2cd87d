from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from evolution.demo.synthetic import CATEGORICAL, FEATURES, TARGET, DriftSpec, generate_rows
from evolution.errors import InsufficientData, InvalidInput
from evolution.training.columns import Columns, Rows
from evolution.training.trainer import TrainedModel, TrainingConfig, holdout_mask, train
from evolution.training.validation import validate

START = datetime(2024, 1, 1, tzinfo=UTC)
CONFIG = TrainingConfig(features=FEATURES, categorical=sorted(CATEGORICAL), target=TARGET, max_iter=120)


class _Scenario:
    def __init__(self) -> None:
        data = generate_rows(4000, seed=41, start=START, drift=DriftSpec(at=START + timedelta(hours=2000)))
        before, after = data[:2000], data[2000:]
        self.stale = train(before, CONFIG, seed=3)  # the champion, trained before the drift
        self.fresh = train(after, CONFIG, seed=3)  # the candidate, trained after it
        self.holdout = [r for r, m in zip(after, holdout_mask(after, CONFIG), strict=True) if m]


@pytest.fixture(scope="module")
def scenario() -> _Scenario:
    return _Scenario()


def _mae(model: TrainedModel, rows: list[dict[str, Any]]) -> float:
    return float(np.mean(np.abs(model.predict(rows) - np.array([r[TARGET] for r in rows]))))


def test_without_a_champion_the_candidate_passes(scenario: _Scenario) -> None:
    report = validate(scenario.fresh, None, scenario.holdout)
    assert report.passed and report.champion_mae is None and report.improvement is None
    assert report.n == len(scenario.holdout)
    assert report.candidate_mae == pytest.approx(_mae(scenario.fresh, scenario.holdout))
    assert "no champion" in report.reason


def test_a_candidate_better_on_the_same_held_out_rows_passes(scenario: _Scenario) -> None:
    report = validate(scenario.fresh, scenario.stale, scenario.holdout)
    assert report.passed
    assert report.champion_mae is not None and report.candidate_mae is not None
    assert report.champion_mae == pytest.approx(_mae(scenario.stale, scenario.holdout))
    expected = (report.champion_mae - report.candidate_mae) / report.champion_mae
    assert report.improvement is not None and report.improvement == pytest.approx(expected)
    assert report.improvement > 0.3


def test_a_worse_candidate_fails_and_the_reason_says_so(scenario: _Scenario) -> None:
    report = validate(scenario.stale, scenario.fresh, scenario.holdout)
    assert not report.passed
    assert report.improvement is not None and report.improvement < 0
    assert "worse than" in report.reason


def test_tolerance_lets_a_slightly_worse_candidate_through(scenario: _Scenario) -> None:
    ratio = _mae(scenario.stale, scenario.holdout) / _mae(scenario.fresh, scenario.holdout)
    assert not validate(
        scenario.stale, scenario.fresh, scenario.holdout, max_regression=ratio - 1 - 0.01
    ).passed
    assert validate(scenario.stale, scenario.fresh, scenario.holdout, max_regression=ratio - 1 + 0.01).passed


def test_the_same_model_as_champion_passes_with_zero_improvement(scenario: _Scenario) -> None:
    report = validate(scenario.fresh, scenario.fresh, scenario.holdout)
    assert report.passed and report.improvement == 0.0


def test_rows_without_a_target_are_not_counted(scenario: _Scenario) -> None:
    rows = [*scenario.holdout, {**scenario.holdout[0], TARGET: None}]
    assert validate(scenario.fresh, scenario.stale, rows).n == len(scenario.holdout)


class _NaNModel(TrainedModel):
    """A model whose predictions are broken, as a corrupted or buggy artifact's would be."""

    def predict(self, data: Rows | Columns) -> np.ndarray:
        out = super().predict(data)
        out[::3] = np.nan
        return out


def _broken(model: TrainedModel) -> TrainedModel:
    return _NaNModel(
        model.estimator,
        model.config,
        model.seed,
        model.encoders,
        model.metrics,
        model.feature_stats,
        model.library_versions,
    )


def test_a_candidate_with_non_finite_predictions_fails(scenario: _Scenario) -> None:
    report = validate(_broken(scenario.fresh), scenario.stale, scenario.holdout)
    assert not report.passed and "non-finite" in report.reason


def test_a_champion_with_non_finite_predictions_is_no_bar(scenario: _Scenario) -> None:
    report = validate(scenario.fresh, _broken(scenario.stale), scenario.holdout)
    assert report.passed and "champion produced" in report.reason


def test_validation_refuses_an_empty_holdout_a_negative_tolerance_and_mismatched_targets(
    scenario: _Scenario,
) -> None:
    with pytest.raises(InsufficientData):
        validate(scenario.fresh, scenario.stale, [{**r, TARGET: None} for r in scenario.holdout[:5]])
    with pytest.raises(InvalidInput, match="max_regression"):
        validate(scenario.fresh, scenario.stale, scenario.holdout, max_regression=-0.1)
    other = train(
        [{**r, "yield_bu_ac": r[TARGET]} for r in generate_rows(300, seed=1, start=START)],
        CONFIG.model_copy(update={"target": "yield_bu_ac", "max_iter": 10}),
        seed=0,
    )
    with pytest.raises(InvalidInput, match="yield_bu_ac"):
        validate(scenario.fresh, other, scenario.holdout)


def test_report_is_json_serialisable(scenario: _Scenario) -> None:
    report = validate(scenario.fresh, scenario.stale, scenario.holdout)
    assert type(report).model_validate_json(report.model_dump_json()) == report
