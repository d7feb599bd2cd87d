"""Deterministic synthetic agronomic data: weather, soil, NDVI and inputs -> yield (t/ha), with drift.

Used by `evolution demo` and by tests. Each row is one field-season observation that arrived at
``event_time``. The relation is a multiplicative crop model an agronomist would recognise (water and
temperature response, a saturating nitrogen response, pH and organic-matter effects, soil texture), plus
field effects and noise.

Determinism: rows are generated in blocks of ``_BLOCK`` rows, each block from its own random stream keyed by
``(seed, block)``, and the field pool from its own stream keyed by ``seed``. So row *i* depends only on the
seed and *i*: ``generate_rows(n)`` is a prefix of ``generate_rows(n + k)``, and a drifted row differs from
its undrifted self only by the drift.

Drift (:class:`DriftSpec`) is both a covariate shift (drier, hotter seasons) and a concept shift: under
drought, heavy nitrogen makes a lush canopy that then "hays off", so yield falls above an N optimum. The NDVI
peak is measured before that happens and does not see it. That is why a model trained before the drift
over-predicts heavily fertilised fields afterwards, and a retrained model is really better.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from evolution.errors import InvalidInput
from evolution.timeutil import as_utc, iso

FEATURES: list[str] = [
    "rain_mm",
    "temp_mean_c",
    "gdd",
    "soil_ph",
    "soil_organic_matter_pct",
    "soil_texture",
    "ndvi_peak",
    "nitrogen_kg_ha",
    "irrigation_mm",
    "crop",
]
CATEGORICAL: set[str] = {"soil_texture", "crop"}
TARGET = "yield_t_ha"

TEXTURES: tuple[str, ...] = ("sand", "loam", "clay", "silt_loam")
CROPS: tuple[str, ...] = ("maize", "wheat", "soy")

MISSING_RATE = 0.01
"""Share of missing values per feature (sensor gaps, clouded NDVI, lost lab sheets); crop is always known."""

_MAYBE_MISSING: tuple[str, ...] = tuple(f for f in FEATURES if f != "crop")
_BLOCK = 1024
_N_FIELDS = 240
_FIELD_STREAM = 0xF1E1D
_ROW_STREAM = 0x5EA5

# Per-crop agronomy, indexed like CROPS: maize, wheat, soy.
_POTENTIAL_T_HA = np.array([11.0, 7.5, 3.8])
_WATER_NEED_MM = np.array([520.0, 420.0, 460.0])
_TEMP_OPT_C = np.array([22.0, 16.0, 23.0])
_TEMP_MEAN_C = np.array([21.0, 15.5, 22.0])
_GDD_BASE_C = np.array([10.0, 0.0, 10.0])
_SEASON_DAYS = np.array([150.0, 125.0, 130.0])
_N_RANGE = np.array([[60.0, 240.0], [40.0, 200.0], [0.0, 40.0]])
_N_SCALE = np.array([70.0, 55.0, 15.0])  # Mitscherlich curvature of the N response
_N_GAIN = np.array([0.55, 0.50, 0.05])  # soy fixes its own nitrogen
_CROP_P = np.array([0.40, 0.35, 0.25])

# Per-texture effects, indexed like TEXTURES: sand, loam, clay, silt_loam.
_TEX_P = np.array([0.20, 0.35, 0.20, 0.25])
_TEX_WATER = np.array([0.78, 1.00, 1.04, 1.06])  # plant-available share of the water supplied
_TEX_YIELD = np.array([0.90, 1.00, 0.95, 1.03])
_TEX_OM_MEAN = np.array([1.6, 2.8, 3.4, 3.1])
_TEX_PH_MEAN = np.array([6.2, 6.6, 7.0, 6.7])


class DriftSpec(BaseModel):
    """Drift injected from ``at`` on: rows with ``event_time >= at`` are drifted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    rain_factor: float = Field(
        default=0.65, gt=0.0, description="Season rainfall is multiplied by this (-35 %)."
    )
    temp_shift_c: float = Field(default=2.5, description="Added to the season's mean temperature (°C).")
    nitrogen_optimum_kg_ha: float = Field(
        default=110.0,
        ge=0.0,
        description="Above this N rate yield falls after the drift (haying-off under drought).",
    )
    nitrogen_excess_penalty: float = Field(
        default=0.35,
        ge=0.0,
        description="Relative yield lost per 100 kg/ha of N above the optimum after the drift.",
    )

    @field_validator("at")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        return as_utc(value)


class SensorFaults(BaseModel):
    """Field failures the drift scan's data-quality checks must catch: a sensor stuck, categories renamed.

    Unlike drift they are breakage, not a new world: the scan alerts on them, and no retraining trains on them until an
    admin accepts the window.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    stuck: dict[str, float] = Field(
        default_factory=dict, description="feature -> the value its sensor is stuck on (every row)"
    )
    renamed: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="feature -> {old label: new label} (e.g. an upstream rename)"
    )


def inject_faults(rows: Iterable[Mapping[str, Any]], faults: SensorFaults) -> list[dict[str, Any]]:
    """Copies of ``rows`` with ``faults`` applied (a missing value stays missing under a rename)."""
    out = []
    for row in rows:
        faulty = dict(row)
        faulty.update(faults.stuck)
        for feature, mapping in faults.renamed.items():
            value = faulty.get(feature)
            if isinstance(value, str) and value in mapping:
                faulty[feature] = mapping[value]
        out.append(faulty)
    return out


def generate_rows(
    n: int,
    seed: int,
    start: datetime,
    drift: DriftSpec | None = None,
    period_s: float = 3600,
) -> list[dict[str, Any]]:
    """``n`` rows: ``event_time`` = start + i*period_s (ISO 8601 UTC), field_id, the FEATURES and the TARGET.

    Missing values are ``None``. Floats are rounded to the precision a real record would carry.
    """
    if n < 0:
        raise InvalidInput(f"n must be >= 0, got {n}")
    if not period_s > 0:
        raise InvalidInput(f"period_s must be > 0, got {period_s}")
    start = as_utc(start)
    if n == 0:
        return []
    fields = _field_pool(seed)
    blocks = [_block(seed, b, fields) for b in range(math.ceil(n / _BLOCK))]
    draws = {k: np.concatenate([blk[k] for blk in blocks])[:n] for k in blocks[0]}

    times = [start + timedelta(seconds=i * period_s) for i in range(n)]
    drifted = np.zeros(n, dtype=bool) if drift is None else np.array([t >= drift.at for t in times])
    values = _simulate(draws, fields, drifted, drift)

    rows: list[dict[str, Any]] = []
    for i in range(n):
        row: dict[str, Any] = {"event_time": iso(times[i]), "field_id": values["field_id"][i]}
        for name in FEATURES:
            row[name] = None if draws[f"missing_{name}"][i] else values[name][i]
        row[TARGET] = values[TARGET][i]
        rows.append(row)
    return rows


def to_columns(
    rows: Iterable[Mapping[str, Any]],
    categorical: Collection[str] | None = None,
) -> dict[str, np.ndarray]:
    """Rows -> columns: floats as float64 with NaN for missing, categoricals as object arrays with None.

    ``categorical`` defaults to :data:`CATEGORICAL` plus ``field_id`` and ``event_time``. Columns are every
    key seen, in order of first appearance; a key absent from a row counts as missing there.
    """
    text_columns = set(CATEGORICAL | {"field_id", "event_time"} if categorical is None else categorical)
    rows = list(rows)
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    out: dict[str, np.ndarray] = {}
    for name in names:
        raw = [row.get(name) for row in rows]
        if name in text_columns:
            out[name] = np.array([None if v is None else str(v) for v in raw], dtype=object)
            continue
        try:
            out[name] = np.array([np.nan if v is None else float(v) for v in raw], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"column {name!r} is not numeric and not declared categorical: {exc}") from exc
    return out


def _field_pool(seed: int) -> dict[str, np.ndarray]:
    """Fields keep their soil, irrigation equipment and a hidden productivity across seasons."""
    rng = np.random.default_rng([seed, _FIELD_STREAM])
    texture = rng.choice(len(TEXTURES), size=_N_FIELDS, p=_TEX_P)
    return {
        "id": np.array([f"field-{i + 1:04d}" for i in range(_N_FIELDS)], dtype=object),
        "texture": texture,
        "ph": np.clip(_TEX_PH_MEAN[texture] + rng.normal(0.0, 0.45, _N_FIELDS), 4.8, 8.4),
        "om": np.clip(_TEX_OM_MEAN[texture] * rng.lognormal(0.0, 0.30, _N_FIELDS), 0.4, 9.0),
        "irrigated": rng.random(_N_FIELDS) < 0.35,
        "productivity": rng.lognormal(0.0, 0.04, _N_FIELDS),
    }


def _block(seed: int, block: int, fields: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every random draw of one block of rows, before drift; the drift only transforms these."""
    rng = np.random.default_rng([seed, _ROW_STREAM, block])
    size = _BLOCK
    crop = rng.choice(len(CROPS), size=size, p=_CROP_P)
    out = {
        "field": rng.integers(0, len(fields["id"]), size=size),
        "crop": crop,
        "rain": rng.gamma(9.0, 50.0, size=size),
        "temp": _TEMP_MEAN_C[crop] + rng.normal(0.0, 2.2, size=size),
        "gdd_noise": rng.normal(0.0, 45.0, size=size),
        "n_rate": rng.uniform(_N_RANGE[crop, 0], _N_RANGE[crop, 1]),
        "irrigation_noise": rng.normal(0.0, 35.0, size=size),
        "ph_noise": rng.normal(0.0, 0.08, size=size),
        "om_noise": rng.normal(0.0, 0.12, size=size),
        "ndvi_noise": rng.normal(0.0, 0.035, size=size),
        "yield_noise": rng.normal(0.0, 0.07, size=size),
    }
    for name in _MAYBE_MISSING:
        out[f"missing_{name}"] = rng.random(size) < MISSING_RATE
    out["missing_crop"] = np.zeros(size, dtype=bool)
    return out


def _simulate(
    d: Mapping[str, np.ndarray],
    fields: Mapping[str, np.ndarray],
    drifted: np.ndarray,
    drift: DriftSpec | None,
) -> dict[str, Sequence[Any]]:
    crop, field = d["crop"], d["field"]
    texture = fields["texture"][field]
    rain = d["rain"].copy()
    temp = d["temp"].copy()
    if drift is not None:
        rain[drifted] *= drift.rain_factor
        temp[drifted] += drift.temp_shift_c
    gdd = np.maximum(_SEASON_DAYS[crop] * (temp - _GDD_BASE_C[crop]) + d["gdd_noise"], 0.0)
    # Irrigated fields top up a dry season; the farmer reacts to the rain, so irrigation drifts with it.
    irrigation = np.where(
        fields["irrigated"][field], np.maximum(330.0 - 0.5 * rain + d["irrigation_noise"], 0.0), 0.0
    )
    ph = np.clip(fields["ph"][field] + d["ph_noise"], 4.5, 8.6)
    om = np.clip(fields["om"][field] + d["om_noise"], 0.3, 10.0)
    n_rate = d["n_rate"]

    water = (rain + 0.85 * irrigation) * _TEX_WATER[texture] / _WATER_NEED_MM[crop]
    water_f = (1.0 - np.exp(-2.2 * water)) - 0.15 * np.maximum(water - 1.8, 0.0)
    temp_f = np.exp(-(((temp - _TEMP_OPT_C[crop]) / 6.0) ** 2)) - 0.04 * np.maximum(
        temp - _TEMP_OPT_C[crop] - 4.0, 0.0
    )
    n_f = 1.0 - _N_GAIN[crop] * np.exp(-n_rate / _N_SCALE[crop])
    ph_f = np.maximum(1.0 - np.where(crop == 2, 0.12, 0.08) * (ph - 6.5) ** 2, 0.5)
    om_f = 0.85 + 0.06 * np.log1p(om)
    canopy = np.clip(
        water_f * temp_f * n_f * ph_f * om_f * _TEX_YIELD[texture] * fields["productivity"][field], 0.02, None
    )

    # NDVI peaks before grain fill: it sees the canopy, not the haying-off that follows under drought.
    ndvi = np.clip(0.22 + 0.62 * canopy**0.8 + d["ndvi_noise"], 0.05, 0.95)
    late = np.ones_like(canopy)
    if drift is not None:
        excess = np.maximum(n_rate - drift.nitrogen_optimum_kg_ha, 0.0) / 100.0
        penalty = np.where(crop == 2, 0.0, drift.nitrogen_excess_penalty * excess)
        late = np.where(drifted, np.maximum(1.0 - penalty, 0.3), 1.0)
    yield_t = _POTENTIAL_T_HA[crop] * canopy * late * np.exp(d["yield_noise"])

    return {
        "field_id": list(fields["id"][field]),
        "rain_mm": _rounded(rain, 1),
        "temp_mean_c": _rounded(temp, 2),
        "gdd": _rounded(gdd, 1),
        "soil_ph": _rounded(ph, 2),
        "soil_organic_matter_pct": _rounded(om, 2),
        "soil_texture": [TEXTURES[t] for t in texture],
        "ndvi_peak": _rounded(ndvi, 3),
        "nitrogen_kg_ha": _rounded(n_rate, 1),
        "irrigation_mm": _rounded(irrigation, 1),
        "crop": [CROPS[c] for c in crop],
        TARGET: _rounded(yield_t, 3),
    }


def _rounded(values: np.ndarray, digits: int) -> list[float]:
    return [float(v) for v in np.round(values, digits)]
