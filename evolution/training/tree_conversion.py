"""A fitted HistGradientBoostingRegressor's trees converted into what shap's exact TreeSHAP can read.

Why this does not simply call ``shap.TreeExplainer(model.estimator)``: shap's built-in conversion of a
HistGradientBoostingRegressor reads every split as a numeric threshold on the columns as given. Our models
have categorical features (crop, soil texture), and scikit-learn (a) reorders the columns internally,
categorical ones first, and (b) splits a categorical column on a *set* of categories, stored as a bitset. The
built-in conversion gets both wrong (predictions off by several t/ha on the demo data). So we convert the
fitted trees ourselves into shap's dict-of-trees input format, in scikit-learn's internal column order,
and mark categorical splits with shap's own categorical split type (which its C++ TreeSHAP already implements
for other libraries), then fold the attributions back onto the model's feature names. The result is exact
path-dependent TreeSHAP of the model as served (:mod:`evolution.training.explain` checks every explanation
against the model's predictions).

The conversion takes about 30 ms, so :func:`converted_model` builds it once per fitted estimator object.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from evolution.errors import EvolutionError, InvalidInput

_BITMASK_CLASSES = 24
"""Categories one shap categorical split can tell apart.

shap's C++ tests membership with ``int(threshold) & (1 << (category - 1))`` where the threshold passes
through a C float, which holds integers exactly only up to 2**24. A feature with more categories is given,
per tree, a coarser code: categories that every split of that tree on that feature sends the same way share
one class (see :func:`class_partition`)."""


@dataclass(frozen=True, eq=False)
class _AugmentedColumn:
    """A column of the matrix shap sees: internal column ``source``, its categories recoded by ``classes``.

    ``classes`` is None for numeric columns (passed as is) and for categorical ones whose categories fit one
    bitmask (code c becomes class c + 1); otherwise it maps code -> class for the trees that use this column.
    """

    source: int
    categorical: bool
    classes: tuple[int, ...] | None
    n_codes: int = 0
    """Codes 0 .. n_codes - 1 are categories; anything else is an unknown category, which goes as missing."""


class ConvertedModel:
    """A fitted HistGradientBoostingRegressor as a shap TreeExplainer plus the column bookkeeping."""

    def __init__(self, estimator: HistGradientBoostingRegressor) -> None:
        import shap  # heavy (numba, pandas): loaded on the first explanation, not when pages import this

        self._estimator = estimator
        self._internal_to_feature = _internal_order(estimator)
        is_cat = np.zeros(len(self._internal_to_feature), dtype=bool)
        if estimator.is_categorical_ is not None:
            is_cat = np.asarray(estimator.is_categorical_, dtype=bool)[self._internal_to_feature]
        known_bitsets, f_idx_map = estimator._bin_mapper.make_known_categories_bitsets()
        known = {int(f): _bitset_members(known_bitsets[f_idx_map[f]]) for f in np.flatnonzero(is_cat)}
        self.columns: list[_AugmentedColumn] = [
            _AugmentedColumn(
                source=f,
                categorical=bool(is_cat[f]),
                classes=None,
                n_codes=max(known[f]) + 1 if known.get(f) else 0,
            )
            for f in range(len(is_cat))
        ]
        column_ids: dict[tuple[int, tuple[int, ...]], int] = {}
        trees: list[dict[str, np.ndarray]] = []
        types: list[np.ndarray] = []
        for iteration in estimator._predictors:
            (predictor,) = iteration  # a regressor has one tree per iteration
            tree, tree_types = _convert_tree(predictor, known, self.columns, column_ids)
            trees.append(tree)
            types.append(tree_types)
        offset = float(np.asarray(estimator._baseline_prediction).ravel()[0])
        self.base_value = offset + sum(float(t["values"][0, 0]) for t in trees)
        self._explainer = shap.TreeExplainer(
            {
                "trees": trees,
                "base_offset": offset,
                "tree_output": "raw_value",
                "objective": "squared_error",
                "input_dtype": np.float64,
                "internal_dtype": np.float64,
            },
            feature_perturbation="tree_path_dependent",
        )
        # shap's dict format has no field for the split type; its ensemble arrays do (0 numeric, 1 category
        # bitmask), and its C++ reads them from there. Shapes are checked so a change in shap fails loudly.
        stacked = self._explainer.model.threshold_types
        if stacked.shape[0] != len(types) or stacked.shape[1] < max(len(t) for t in types):
            raise EvolutionError(
                f"unexpected shap tree layout {stacked.shape}; cannot mark categorical splits"
            )
        for i, tree_types in enumerate(types):
            stacked[i, : len(tree_types)] = tree_types

    def explain(self, design: np.ndarray) -> np.ndarray:
        """SHAP values (n x features, in the model's feature order) for a design matrix of the model."""
        internal = self._internal_matrix(design)
        augmented = np.empty((internal.shape[0], len(self.columns)), dtype=np.float64)
        for k, col in enumerate(self.columns):
            x = internal[:, col.source]
            if not col.categorical:
                augmented[:, k] = x
                continue
            valid = np.isfinite(x) & (x >= 0) & (x < col.n_codes)
            codes = np.where(valid, x, 0.0).astype(np.int64)
            lookup = np.arange(1, col.n_codes + 1) if col.classes is None else np.array(col.classes)
            classes = lookup[codes] if col.n_codes else np.zeros(len(codes))
            augmented[:, k] = np.where(valid, classes, np.nan)
        phi_aug = np.asarray(
            self._explainer.shap_values(augmented, check_additivity=False), dtype=np.float64
        ).reshape(internal.shape[0], len(self.columns))
        phi = np.zeros_like(design, dtype=np.float64)
        for k, col in enumerate(self.columns):
            phi[:, self._internal_to_feature[col.source]] += phi_aug[:, k]
        return phi

    def _internal_matrix(self, design: np.ndarray) -> np.ndarray:
        """The design matrix as the trees see it: scikit-learn's own column order and category codes."""
        preprocessor = self._estimator._preprocessor
        if preprocessor is None:
            return np.asarray(design, dtype=np.float64)
        return np.asarray(preprocessor.transform(design), dtype=np.float64)


def _internal_order(estimator: HistGradientBoostingRegressor) -> np.ndarray:
    """Original feature index of each internal column (scikit-learn puts categorical columns first)."""
    n = int(estimator.n_features_in_)
    preprocessor = estimator._preprocessor
    if preprocessor is None:
        return np.arange(n)
    parts = []
    for name, transformer, selected in preprocessor.transformers_:
        if name == "remainder" and transformer == "drop":
            continue
        selected = np.asarray(selected)
        parts.append(np.flatnonzero(selected) if selected.dtype == bool else selected.astype(np.int64))
    order = np.concatenate(parts) if parts else np.arange(0)
    if sorted(order.tolist()) != list(range(n)):
        raise EvolutionError(f"cannot map scikit-learn's internal columns {order.tolist()} to {n} features")
    return order


def _bitset_members(bitset: np.ndarray) -> frozenset[int]:
    """Members of a scikit-learn category bitset (rows of uint32 words, bit c of word c // 32)."""
    return frozenset(
        32 * w + b for w, word in enumerate(bitset.tolist()) for b in range(32) if (int(word) >> b) & 1
    )


def _convert_tree(
    predictor: Any,
    known: Mapping[int, frozenset[int]],
    columns: list[_AugmentedColumn],
    column_ids: dict[tuple[int, tuple[int, ...]], int],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One scikit-learn tree as a shap tree dict, plus each node's split type (0 numeric, 1 categorical)."""
    nodes = predictor.nodes
    n = len(nodes)
    is_leaf = nodes["is_leaf"].astype(bool)
    left = np.where(is_leaf, -1, nodes["left"].astype(np.int64))
    right = np.where(is_leaf, -1, nodes["right"].astype(np.int64))
    go_left_missing = nodes["missing_go_to_left"].astype(bool)
    features = np.where(is_leaf, -2, nodes["feature_idx"].astype(np.int64))
    thresholds = np.where(is_leaf, 0.0, nodes["num_threshold"].astype(np.float64))
    types = np.zeros(n, dtype=np.int32)

    # Which codes each categorical split sends left, with scikit-learn's rules: in the split's bitset -> left,
    # another known category -> right, anything else -> where missing values go.
    raw_left = predictor.raw_left_cat_bitsets
    goes_left: dict[int, dict[int, dict[int, bool]]] = {}  # feature -> node -> code -> goes left
    for node in np.flatnonzero(~is_leaf & nodes["is_categorical"].astype(bool)).tolist():
        f = int(features[node])
        in_left = _bitset_members(raw_left[int(nodes["bitset_idx"][node])])
        domain = range(max(known[f]) + 1) if known[f] else range(0)
        missing_left = bool(go_left_missing[node])
        goes_left.setdefault(f, {})[node] = {
            c: (c in in_left) or (c not in known[f] and missing_left) for c in domain
        }
    for f, splits in goes_left.items():
        n_codes = max((len(s) for s in splits.values()), default=0)
        if n_codes <= _BITMASK_CLASSES:
            class_of = list(range(1, n_codes + 1))  # the shared identity column f
            column = f
        else:
            class_of = class_partition(splits, n_codes, f)
            key = (f, tuple(class_of))
            if key not in column_ids:
                column_ids[key] = len(columns)
                columns.append(
                    _AugmentedColumn(source=f, categorical=True, classes=tuple(class_of), n_codes=n_codes)
                )
            column = column_ids[key]
        for node, left_codes in splits.items():
            mask = 0
            for c, is_left in left_codes.items():
                if is_left:
                    mask |= 1 << (class_of[c] - 1)
            features[node] = column
            thresholds[node] = float(mask)
            types[node] = 1

    # Covers and internal values bottom-up: path-dependent TreeSHAP's reference value is the cover-weighted
    # mean of the leaves, and shap takes the expected value from the root (scikit-learn leaves it at 0).
    cover = nodes["count"].astype(np.float64)
    values = np.where(is_leaf, nodes["value"].astype(np.float64), 0.0)
    for node in _post_order(left, right):
        if not is_leaf[node]:
            lo, hi = left[node], right[node]
            cover[node] = cover[lo] + cover[hi]
            values[node] = (cover[lo] * values[lo] + cover[hi] * values[hi]) / cover[node]
    tree = {
        "children_left": left,
        "children_right": right,
        "children_default": np.where(is_leaf, -1, np.where(go_left_missing, left, right)),
        "features": features,
        "thresholds": thresholds,
        "values": values.reshape(n, 1),
        "node_sample_weight": cover,
    }
    return tree, types


def class_partition(splits: Mapping[int, Mapping[int, bool]], n_codes: int, feature: int) -> list[int]:
    """Class (1-based) of each code: codes that every split of one tree sends the same way share a class."""
    patterns: dict[tuple[bool, ...], int] = {}
    class_of = []
    for c in range(n_codes):
        pattern = tuple(s.get(c, False) for s in splits.values())
        class_of.append(patterns.setdefault(pattern, len(patterns) + 1))
    if len(patterns) > _BITMASK_CLASSES:
        raise InvalidInput(
            f"a tree splits internal feature {feature} into {len(patterns)} distinguishable category "
            f"groups; exact SHAP supports at most {_BITMASK_CLASSES} per tree"
        )
    return class_of


def _post_order(left: np.ndarray, right: np.ndarray) -> list[int]:
    """Node indices with every child before its parent (iterative: trees can be deep)."""
    order: list[int] = []
    stack = [0]
    while stack:
        i = stack.pop()
        order.append(i)
        if left[i] >= 0:
            stack.extend((int(left[i]), int(right[i])))
    return order[::-1]


_cache: weakref.WeakKeyDictionary[HistGradientBoostingRegressor, ConvertedModel] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def converted_model(estimator: HistGradientBoostingRegressor) -> ConvertedModel:
    """The conversion of ``estimator``, built once per fitted estimator object (pages explain repeatedly)."""
    with _cache_lock:
        found = _cache.get(estimator)
        if found is None:
            found = ConvertedModel(estimator)
            _cache[estimator] = found
        return found
