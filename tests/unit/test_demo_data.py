from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from evolution.demo.synthetic import (
    CATEGORICAL,
    CROPS,
    FEATURES,
    TARGET,
    TEXTURES,
    DriftSpec,
    generate_rows,
    to_columns,
)
from evolution.errors import InvalidInput
from evolution.timeutil import parse_iso

START = datetime(2024, 3, 1, tzinfo=UTC)


def test_same_seed_gives_identical_rows_and_another_seed_does_not() -> None:
    assert generate_rows(600, seed=4, start=START) == generate_rows(600, seed=4, start=START)
    assert generate_rows(600, seed=4, start=START) != generate_rows(600, seed=5, start=START)


def test_shorter_run_is_a_prefix_of_a_longer_one() -> None:
    assert generate_rows(1500, seed=9, start=START)[:700] == generate_rows(700, seed=9, start=START)


def test_rows_carry_increasing_utc_event_times_spaced_by_the_period() -> None:
    rows = generate_rows(50, seed=1, start=START, period_s=900)
    times = [parse_iso(r["event_time"]) for r in rows]
    assert all(r["event_time"].endswith("Z") for r in rows)
    assert times[0] == START
    assert all(b - a == timedelta(seconds=900) for a, b in itertools.pairwise(times))


def test_rows_have_every_feature_with_plausible_values_and_a_positive_yield() -> None:
    rows = generate_rows(4000, seed=2, start=START)
    assert set(rows[0]) == {"event_time", "field_id", *FEATURES, TARGET}
    cols = to_columns(rows)
    assert set(cols["crop"]) == set(CROPS)
    assert set(cols["soil_texture"]) - {None} == set(TEXTURES)
    assert np.all(cols[TARGET] > 0) and 2.0 < np.mean(cols[TARGET]) < 8.0
    assert np.nanmin(cols["soil_ph"]) >= 4.5 and np.nanmax(cols["soil_ph"]) <= 8.6
    assert np.nanmin(cols["ndvi_peak"]) > 0.0 and np.nanmax(cols["ndvi_peak"]) < 1.0
    assert np.nanmin(cols["irrigation_mm"]) == 0.0
    assert all(str(f).startswith("field-") for f in cols["field_id"])


def test_about_one_percent_of_feature_values_are_missing_but_never_the_crop_or_the_target() -> None:
    cols = to_columns(generate_rows(5000, seed=3, start=START))
    for name in FEATURES:
        col = cols[name]
        rate = np.mean([v is None for v in col]) if name in CATEGORICAL else np.mean(np.isnan(col))
        if name == "crop":
            assert rate == 0.0
        else:
            assert 0.004 <= rate <= 0.02, (name, rate)
    assert not np.isnan(cols[TARGET]).any()


def test_yield_responds_to_water_and_nitrogen_as_an_agronomist_expects() -> None:
    cols = to_columns(generate_rows(6000, seed=5, start=START))
    maize = cols["crop"] == "maize"
    n = cols["nitrogen_kg_ha"]
    wet = cols["rain_mm"] + cols["irrigation_mm"]
    y = cols[TARGET]
    assert np.nanmean(y[maize & (n > 180)]) > np.nanmean(y[maize & (n < 100)])
    assert np.nanmean(y[maize & (wet > 550)]) > np.nanmean(y[maize & (wet < 300)])
    seen = maize & ~np.isnan(cols["ndvi_peak"])
    assert np.corrcoef(cols["ndvi_peak"][seen], y[seen])[0, 1] > 0.7  # NDVI tracks the canopy within a crop


def test_drift_changes_only_rows_at_or_after_its_time() -> None:
    at = START + timedelta(hours=1000)
    plain = generate_rows(2000, seed=6, start=START)
    drifted = generate_rows(2000, seed=6, start=START, drift=DriftSpec(at=at))
    assert drifted[:1000] == plain[:1000]
    after_plain, after_drift = to_columns(plain[1000:]), to_columns(drifted[1000:])
    assert list(after_drift["field_id"]) == list(after_plain["field_id"])
    assert list(after_drift["crop"]) == list(after_plain["crop"])
    np.testing.assert_array_equal(after_drift["nitrogen_kg_ha"], after_plain["nitrogen_kg_ha"])


def test_drift_shifts_rain_and_temperature_by_the_spec() -> None:
    at = START
    plain = to_columns(generate_rows(3000, seed=7, start=START))
    drifted = to_columns(generate_rows(3000, seed=7, start=START, drift=DriftSpec(at=at)))
    rain_ratio = np.nanmean(drifted["rain_mm"]) / np.nanmean(plain["rain_mm"])
    temp_shift = np.nanmean(drifted["temp_mean_c"] - plain["temp_mean_c"])
    assert rain_ratio == pytest.approx(0.65, abs=0.01)
    assert temp_shift == pytest.approx(2.5, abs=0.01)


def test_drift_turns_heavy_nitrogen_from_a_gain_into_a_loss() -> None:
    spec = DriftSpec(at=START)
    plain = to_columns(generate_rows(4000, seed=8, start=START))
    drifted = to_columns(generate_rows(4000, seed=8, start=START, drift=spec))
    maize_heavy = (plain["crop"] == "maize") & (plain["nitrogen_kg_ha"] > 200)
    maize_light = (plain["crop"] == "maize") & (plain["nitrogen_kg_ha"] < 100)
    loss_heavy = 1 - np.mean(drifted[TARGET][maize_heavy]) / np.mean(plain[TARGET][maize_heavy])
    loss_light = 1 - np.mean(drifted[TARGET][maize_light]) / np.mean(plain[TARGET][maize_light])
    assert loss_heavy > loss_light + 0.2
    assert np.mean(drifted[TARGET][maize_heavy]) < np.mean(drifted[TARGET][maize_light])


def test_drift_spec_reads_a_naive_time_as_utc() -> None:
    assert DriftSpec(at=datetime(2024, 5, 1)).at == datetime(2024, 5, 1, tzinfo=UTC)


def test_to_columns_gives_float64_with_nan_and_object_arrays_with_none() -> None:
    rows: list[dict[str, Any]] = [
        {"rain_mm": 10.0, "crop": "soy", "field_id": "f1"},
        {"rain_mm": None, "crop": None, "field_id": "f2"},
        {"crop": "maize", "field_id": "f3"},
    ]
    cols = to_columns(rows)
    assert cols["rain_mm"].dtype == np.float64
    assert cols["rain_mm"][0] == 10.0 and np.isnan(cols["rain_mm"][1:]).all()
    assert cols["crop"].dtype == object and list(cols["crop"]) == ["soy", None, "maize"]
    assert list(cols["field_id"]) == ["f1", "f2", "f3"]


def test_to_columns_names_a_column_that_is_neither_numeric_nor_categorical() -> None:
    with pytest.raises(InvalidInput, match="soil_ph"):
        to_columns([{"soil_ph": "acidic"}])


def test_generate_rows_refuses_a_negative_count_and_a_non_positive_period() -> None:
    with pytest.raises(InvalidInput, match="n must be"):
        generate_rows(-1, seed=0, start=START)
    with pytest.raises(InvalidInput, match="period_s"):
        generate_rows(5, seed=0, start=START, period_s=0)
    assert generate_rows(0, seed=0, start=START) == []
