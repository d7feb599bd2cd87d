"""The built-in format's predictions without scikit-learn's per-call overhead, bit for bit the same numbers.

``HistGradientBoostingRegressor.predict`` on one row costs about 2-3 ms, almost none of it in the trees: the input
is validated, then re-encoded by a ``ColumnTransformer`` (an ``OrdinalEncoder`` for the categorical columns, run
through joblib), then each tree is called. :class:`FastPredictor` does the same steps directly, with the estimator's
own fitted parts:

* the categorical columns are mapped to the fitted ``OrdinalEncoder``'s codes (a value it never saw, and a missing
  one, become NaN, as ``handle_unknown="use_encoded_value", unknown_value=nan, encoded_missing_value=nan`` make
  them) and placed first, the numeric columns after them, in order (the ``ColumnTransformer``'s output);
* the raw prediction starts from the baseline and adds each tree's ``predict`` (scikit-learn's Cython tree walk,
  given the same known-category bitsets), in the same order, so every floating-point addition is the same one;
* the loss's inverse link makes the prediction (the identity for squared error).

It relies on attributes scikit-learn keeps private, so :func:`fast_predictor` builds one only after checking the
estimator's shape, and then proves it on a probe batch (every known category, missing and unseen ones, numbers
and NaN) against ``estimator.predict``: on any difference, or any error, it returns None and the caller keeps
scikit-learn's own path.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

log = logging.getLogger(__name__)

PROBE_ROWS = 64


class FastPredictor:
    def __init__(self, estimator: HistGradientBoostingRegressor) -> None:
        n_features = int(estimator.n_features_in_)
        if int(estimator.n_trees_per_iteration_) != 1:
            raise ValueError("one tree per iteration expected")
        preprocessor = estimator._preprocessor
        self._cat_cols: list[int] = []
        self._categories: list[np.ndarray] = []
        if preprocessor is None:
            self._num_cols = list(range(n_features))
        else:
            is_cat = np.asarray(estimator.is_categorical_, dtype=bool)
            encoder = preprocessor.named_transformers_["encoder"]
            names = [name for name, *_ in preprocessor.transformers_]
            if names[:2] != ["encoder", "numerical"] or len(encoder.categories_) != int(is_cat.sum()):
                raise ValueError(f"unexpected preprocessor {names}")
            if encoder.handle_unknown != "use_encoded_value" or not np.isnan(encoder.unknown_value):
                raise ValueError("unexpected handling of unknown categories")
            self._cat_cols = [int(j) for j in np.flatnonzero(is_cat)]
            self._num_cols = [int(j) for j in np.flatnonzero(~is_cat)]
            for cats in encoder.categories_:
                cats = np.asarray(cats, dtype=np.float64)
                known = cats[~np.isnan(cats)]
                if known.size and np.any(np.diff(known) <= 0):
                    raise ValueError("categories not sorted")
                self._categories.append(known)
        self._known_bitsets, self._f_idx_map = estimator._bin_mapper.make_known_categories_bitsets()
        self._trees = [predictors[0] for predictors in estimator._predictors]
        self._baseline = estimator._baseline_prediction
        self._inverse = estimator._loss.link.inverse
        self._n_features = n_features

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Predictions for the design matrix (n x features, float64), as ``estimator.predict`` gives them."""
        n = matrix.shape[0]
        x = np.empty((n, self._n_features), dtype=np.float64)
        for out, (j, known) in enumerate(zip(self._cat_cols, self._categories, strict=True)):
            x[:, out] = _encode(matrix[:, j], known)
        x[:, len(self._cat_cols) :] = matrix[:, self._num_cols]
        raw = np.zeros((n, 1), dtype=self._baseline.dtype, order="F")
        raw += self._baseline
        for tree in self._trees:
            raw[:, 0] += tree.predict(x, self._known_bitsets, self._f_idx_map, 1)
        return np.asarray(self._inverse(raw.ravel()), dtype=np.float64)


def _encode(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Each value's position among the fitted categories (sorted), NaN for NaN and for a value not among them."""
    out = np.full(values.shape[0], np.nan)
    if known.size == 0:
        return out
    at = np.searchsorted(known, values)
    inside = at < known.size
    hit = np.zeros(values.shape[0], dtype=bool)
    hit[inside] = known[at[inside]] == values[inside]
    out[hit] = at[hit]
    return out


def fast_predictor(estimator: Any) -> FastPredictor | None:
    """A :class:`FastPredictor` proven equal to ``estimator.predict`` on a probe batch, else None."""
    try:
        fast = FastPredictor(estimator)
        probe = _probe(fast, np.random.default_rng(0))
        if np.array_equal(fast.predict(probe), np.asarray(estimator.predict(probe)), equal_nan=True):
            return fast
        log.debug("fast prediction path differs from the estimator's on the probe batch: not used")
    except Exception as error:  # a scikit-learn whose private parts differ: keep its own path
        log.debug("fast prediction path not available: %s", error)
    return None


def _probe(fast: FastPredictor, rng: np.random.Generator) -> np.ndarray:
    probe = rng.normal(0.0, 100.0, size=(PROBE_ROWS, fast._n_features))
    probe[rng.random(probe.shape) < 0.1] = np.nan
    probe[0, :] = np.nan
    for j, known in zip(fast._cat_cols, fast._categories, strict=True):
        choices = np.concatenate([known, [np.nan, -1.0, float(known.size) + 7.0, 0.5]])
        probe[:, j] = choices[np.arange(PROBE_ROWS) % choices.size]
    return probe
