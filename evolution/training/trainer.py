"""The built-in trainer: scikit-learn's HistGradientBoostingRegressor, fixed seed, byte-identical output.

Why the output is reproducible (the manifest binds the model's digest to the snapshot and the seed, so the
same snapshot and seed must give the same bytes):

* the held-out split is a hash of each row's split keys (``field_id`` and ``event_time`` by default), not a
  random draw, so it depends neither on row order nor on the seed; and a row held out for one model is held
  out for every model, which keeps validation against the champion fair;
* training rows are put in the order of that hash before fitting, so the trees do not depend on row order;
* categories get a fixed ordinal code (sorted by name) that is stored with the model;
* the fit runs on one OpenMP thread: the estimator records its thread count, so a different core count would
  otherwise change the pickle;
* model.json is canonical JSON (sorted keys, no whitespace) and holds nothing time- or machine-dependent.

This module owns the config and metrics models, fitting, saving and loading. Reading rows into typed columns and
the split digest are :mod:`evolution.training.columns`; category encoding and the design matrix are
:mod:`evolution.training.design_matrix`.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sklearn
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import ThreadpoolController

from evolution.canonical import canonical_json
from evolution.errors import InsufficientData, IntegrityViolation, InvalidInput
from evolution.training.columns import (
    Columns,
    Rows,
    as_columns,
    data_length,
    holdout_mask_from_digests,
    require_columns,
    split_digests,
)
from evolution.training.design_matrix import design_matrix, fit_encoders
from evolution.training.fast_predict import FastPredictor, fast_predictor

MODEL_PICKLE = "model.pkl"
MODEL_JSON = "model.json"
MODEL_FILES: tuple[str, ...] = (MODEL_JSON, MODEL_PICKLE)
FORMAT = "evolution.hist_gbr/1"
PICKLE_PROTOCOL = 5

MIN_TRAIN_ROWS = 20

_controller: ThreadpoolController | None = None


def _single_threaded() -> Any:
    """A context limiting OpenMP and BLAS to one thread, from a controller built once.

    Building the controller scans the loaded libraries (about 2 ms); reusing it makes the limit nearly free.
    It is built on first use, after sklearn (and its OpenMP runtime) has been imported.
    """
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1)


class TrainingConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    algorithm: Literal["hist_gbr"] = "hist_gbr"
    max_iter: int = Field(default=200, ge=1, le=5000)
    learning_rate: float = Field(default=0.08, gt=0.0, le=1.0)
    max_leaf_nodes: int = Field(default=31, ge=2, le=4096)
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    features: list[str] = Field(min_length=1)
    categorical: list[str] = Field(default_factory=list)
    target: str
    split_keys: list[str] = Field(
        default_factory=lambda: ["field_id", "event_time"],
        min_length=1,
        description="Columns whose values decide, by hash, whether a row is held out.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features contain duplicates: {self.features}")
        unknown = sorted(set(self.categorical) - set(self.features))
        if unknown:
            raise ValueError(f"categorical names features that are not in features: {unknown}")
        if self.target in self.features:
            raise ValueError(f"target {self.target!r} is also listed as a feature")
        return self


class ErrorSummary(BaseModel):
    """Summary of absolute errors on the held-out rows: the MAE baseline a drift scan compares against."""

    model_config = ConfigDict(frozen=True)

    n: int
    mean: float
    var: float


class TrainingMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)

    holdout_mae: float
    holdout_rmse: float
    train_mae: float
    n_train: int
    n_holdout: int
    n_dropped_missing_target: int
    holdout_abs_error: ErrorSummary


class TrainedModel:
    """A fitted model with everything needed to predict and to explain where it came from.

    The built-in format of the model-format port (:class:`evolution.training.formats.ServedModel`).
    """

    format: Literal["builtin"] = "builtin"

    def __init__(
        self,
        estimator: HistGradientBoostingRegressor,
        config: TrainingConfig,
        seed: int,
        encoders: dict[str, list[str]],
        metrics: TrainingMetrics,
        feature_stats: dict[str, dict[str, Any]],
        library_versions: dict[str, str],
    ) -> None:
        self.estimator = estimator
        self.config = config
        self.seed = seed
        self.encoders = encoders
        self.metrics = metrics
        self.feature_stats = feature_stats
        self.library_versions = library_versions
        self._fast: FastPredictor | bool | None = False  # False: not tried yet (see fast_predict)

    @property
    def features(self) -> list[str]:
        return list(self.config.features)

    @property
    def categorical(self) -> list[str]:
        return list(self.config.categorical)

    @property
    def target(self) -> str:
        return self.config.target

    def predict(self, data: Rows | Columns) -> np.ndarray:
        """Predictions for rows or columns; missing features are NaN, unseen categories count as missing."""
        columns = as_columns(data, self.config.features, self.config.categorical)
        n = data_length(data)
        if n == 0:
            return np.empty(0, dtype=np.float64)
        matrix = design_matrix(columns, self.config, self.encoders, n)
        fast = self._fast
        if fast is False:
            fast = self._fast = fast_predictor(self.estimator)
        if isinstance(fast, FastPredictor):
            return fast.predict(matrix)  # the same numbers, without scikit-learn's per-call overhead
        # One thread: the estimator opens an OpenMP region per tree, and waking a team of threads 200 times
        # costs ~35 ms per call on a busy 2-core machine against ~4 ms single-threaded.
        with _single_threaded():
            return np.asarray(self.estimator.predict(matrix), dtype=np.float64)

    def to_files(self) -> dict[str, bytes]:
        """The exact bytes of model.json and model.pkl (what :meth:`save` writes)."""
        payload = {"format": FORMAT, "estimator": self.estimator}
        return {MODEL_JSON: canonical_json(self.describe()), MODEL_PICKLE: canonical_pickle(payload)}

    def describe(self) -> dict[str, Any]:
        """model.json's content: config, seed, encoders, metrics and feature stats."""
        return {
            "format": FORMAT,
            "config": self.config.model_dump(mode="json"),
            "seed": self.seed,
            "features": self.features,
            "target": self.target,
            "encoders": self.encoders,
            "metrics": self.metrics.model_dump(mode="json"),
            "feature_stats": self.feature_stats,
            "library_versions": self.library_versions,
        }

    def file_digests(self) -> dict[str, str]:
        return {name: hashlib.sha256(data).hexdigest() for name, data in self.to_files().items()}

    def save(self, directory: str | Path) -> list[Path]:
        """Write model.json and model.pkl into ``directory`` (created if needed); returns their paths."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, data in sorted(self.to_files().items()):
            path = target / name
            tmp = target / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.replace(path)
            paths.append(path)
        return paths


def train(data: Rows | Columns, config: TrainingConfig, seed: int) -> TrainedModel:
    """Fit on the rows whose split hash is not held out; report metrics on the held-out rows.

    Raises InvalidInput when a configured column is missing or malformed, InsufficientData when too few
    rows remain.
    """
    columns = as_columns(data, _used_columns(config), _text_columns(config))
    n = data_length(data)
    require_columns(columns, [*config.features, config.target, *config.split_keys])

    y_all = np.asarray(columns[config.target], dtype=np.float64)
    labelled = np.isfinite(y_all)
    keys = split_digests(columns, config.split_keys)
    holdout = holdout_mask_from_digests(keys, config.holdout_fraction)
    train_idx = np.flatnonzero(labelled & ~holdout)
    hold_idx = np.flatnonzero(labelled & holdout)
    if len(train_idx) < MIN_TRAIN_ROWS or len(hold_idx) == 0:
        raise InsufficientData(
            f"need at least {MIN_TRAIN_ROWS} training rows and 1 held-out row with a finite "
            f"{config.target!r}; "
            f"got {len(train_idx)} training and {len(hold_idx)} held-out of {n} rows"
        )
    # Canonical order: by split digest, then by original position for exact duplicates.
    train_idx = train_idx[np.lexsort((train_idx, keys[train_idx]))]
    hold_idx = hold_idx[np.lexsort((hold_idx, keys[hold_idx]))]

    train_cols = {name: col[train_idx] for name, col in columns.items()}
    encoders = fit_encoders(train_cols, config)
    x_train = design_matrix(train_cols, config, encoders, len(train_idx))
    estimator = HistGradientBoostingRegressor(
        loss="squared_error",
        learning_rate=config.learning_rate,
        max_iter=config.max_iter,
        max_leaf_nodes=config.max_leaf_nodes,
        categorical_features=np.array([f in config.categorical for f in config.features], dtype=bool),
        early_stopping=False,  # our own held-out split is the validation; no second random split
        random_state=seed,
    )
    with _single_threaded():
        estimator.fit(x_train, y_all[train_idx])
        train_pred = estimator.predict(x_train)
        hold_cols = {name: col[hold_idx] for name, col in columns.items()}
        hold_pred = estimator.predict(design_matrix(hold_cols, config, encoders, len(hold_idx)))

    abs_err = np.abs(hold_pred - y_all[hold_idx])
    metrics = TrainingMetrics(
        holdout_mae=float(np.mean(abs_err)),
        holdout_rmse=float(np.sqrt(np.mean(abs_err**2))),
        train_mae=float(np.mean(np.abs(train_pred - y_all[train_idx]))),
        n_train=len(train_idx),
        n_holdout=len(hold_idx),
        n_dropped_missing_target=int(n - labelled.sum()),
        holdout_abs_error=ErrorSummary(
            n=len(hold_idx),
            mean=float(np.mean(abs_err)),
            var=float(np.var(abs_err, ddof=1)) if len(abs_err) > 1 else 0.0,
        ),
    )
    return TrainedModel(
        estimator=estimator,
        config=config,
        seed=seed,
        encoders=encoders,
        metrics=metrics,
        feature_stats=_feature_stats(train_cols, config),
        library_versions={"scikit-learn": sklearn.__version__, "numpy": np.__version__},
    )


def load_model(source: str | Path | Mapping[str, bytes]) -> TrainedModel:
    """Load a model from a directory or from ``{"model.json": ..., "model.pkl": ...}`` bytes.

    SECURITY: this unpickles model.pkl, and unpickling runs code. The caller MUST have verified the signed
    manifest (the file digests and their signature) before calling this; never pass bytes whose signature
    has not verified.
    """
    if isinstance(source, Mapping):
        files = dict(source)
    else:
        directory = Path(source)
        files = {
            name: (directory / name).read_bytes() for name in MODEL_FILES if (directory / name).is_file()
        }
    missing = [name for name in MODEL_FILES if name not in files]
    if missing:
        raise InvalidInput(f"model files missing: {missing}")
    try:
        meta = json.loads(files[MODEL_JSON])
    except ValueError as exc:
        raise IntegrityViolation(f"{MODEL_JSON} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise InvalidInput(f"{MODEL_JSON} has format {found!r}, expected {FORMAT!r}")
    try:  # all of model.json is checked before model.pkl is touched
        config = TrainingConfig.model_validate(meta["config"])
        seed = int(meta["seed"])
        encoders = {str(k): [str(c) for c in v] for k, v in meta["encoders"].items()}
        metrics = TrainingMetrics.model_validate(meta["metrics"])
        feature_stats = dict(meta["feature_stats"])
        library_versions = {str(k): str(v) for k, v in meta["library_versions"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IntegrityViolation(f"{MODEL_JSON} is malformed: {exc!r}") from exc
    payload = pickle.loads(files[MODEL_PICKLE])  # verified by the caller: see the docstring
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise IntegrityViolation(f"{MODEL_PICKLE} is not a {FORMAT} payload")
    estimator = payload["estimator"]
    if not isinstance(estimator, HistGradientBoostingRegressor):
        raise IntegrityViolation(
            f"{MODEL_PICKLE} holds {type(estimator).__name__}, not a HistGradientBoostingRegressor"
        )
    if estimator.n_features_in_ != len(config.features):
        raise IntegrityViolation(
            f"{MODEL_PICKLE} expects {estimator.n_features_in_} features, "
            f"{MODEL_JSON} lists {len(config.features)}"
        )
    return TrainedModel(
        estimator=estimator,
        config=config,
        seed=seed,
        encoders=encoders,
        metrics=metrics,
        feature_stats=feature_stats,
        library_versions=library_versions,
    )


def canonical_pickle(value: Any) -> bytes:
    """Pickle bytes that do not depend on which equal strings happen to be one object.

    Pickle writes a repeated object once and refers back to it, so the bytes follow object identity: a fitted
    estimator and the same estimator loaded from disk (where attribute names come back interned) pickle
    differently. One round trip settles the sharing; dumping again is then a fixpoint, so a loaded model saves
    to the very bytes it was loaded from. (Loading our own fresh bytes here is safe: nothing external.)
    """
    first = pickle.dumps(value, protocol=PICKLE_PROTOCOL)
    return pickle.dumps(pickle.loads(first), protocol=PICKLE_PROTOCOL)


def holdout_mask(data: Rows | Columns, config: TrainingConfig) -> np.ndarray:
    """True for the rows ``train`` holds out under ``config`` (the same rows for every model and seed)."""
    columns = as_columns(data, config.split_keys, config.split_keys)
    if not columns:
        raise InvalidInput(f"data lacks the split key column(s) {config.split_keys}")
    return holdout_mask_from_digests(split_digests(columns, config.split_keys), config.holdout_fraction)


def _used_columns(config: TrainingConfig) -> list[str]:
    return list(dict.fromkeys([*config.features, config.target, *config.split_keys]))


def _text_columns(config: TrainingConfig) -> set[str]:
    return {*config.categorical, *config.split_keys} - {config.target}


def _feature_stats(columns: Mapping[str, np.ndarray], config: TrainingConfig) -> dict[str, dict[str, Any]]:
    """Training-set statistics per feature (counts, moments, decile edges, categories) for drift baselines."""
    stats: dict[str, dict[str, Any]] = {}
    for name in [*config.features, config.target]:
        col = columns[name]
        if name in config.categorical:
            counts: dict[str, int] = {}
            for v in col:
                if v is not None:
                    counts[v] = counts.get(v, 0) + 1
            stats[name] = {
                "kind": "categorical",
                "n": len(col),
                "n_missing": int(sum(v is None for v in col)),
                "counts": dict(sorted(counts.items())),
            }
            continue
        finite = col[np.isfinite(col)]
        entry: dict[str, Any] = {"kind": "numeric", "n": len(col), "n_missing": int(len(col) - len(finite))}
        if len(finite):
            entry |= {
                "mean": float(np.mean(finite)),
                "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0,
                "min": float(np.min(finite)),
                "max": float(np.max(finite)),
                "deciles": [float(q) for q in np.quantile(finite, np.linspace(0, 1, 11)[1:-1])],
            }
        stats[name] = entry
    return stats
