"""Exact SHAP explanations of the built-in trainer's models, and attribution drift between two windows.

Why this does not simply call ``shap.TreeExplainer(model.estimator)``: shap's built-in conversion of a
HistGradientBoostingRegressor reads every split as a numeric threshold on the columns as given. Our models
have categorical features (crop, soil texture), and scikit-learn (a) reorders the columns internally,
categorical ones first, and (b) splits a categorical column on a *set* of categories, stored as a bitset. The
built-in conversion gets both wrong (predictions off by several t/ha on the demo data). So we convert the
fitted trees ourselves into shap's dict-of-trees input format, in scikit-learn's internal column order,
and mark categorical splits with shap's own categorical split type (which its C++ TreeSHAP already implements
for other libraries), then fold the attributions back onto the model's feature names. The result is exact
path-dependent TreeSHAP of the model as served; every explanation is checked (base value + sum of SHAP values
== the model's prediction, to 1e-6 relative) and raises rather than return an explanation that is not.

Row caps: exact TreeSHAP costs about 1 ms per row for a 200-tree model (about 0.5 s for 500 rows on a busy
2-core machine; the conversion, about 30 ms, is done once per fitted estimator), and pages may hand over a
whole snapshot, so each call explains at most ``max_rows`` rows (default :data:`MAX_ROWS`), a seeded random
sample of positions, so the same input always gives the same explanation.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.ensemble import HistGradientBoostingRegressor

from evolution.errors import EvolutionError, InvalidInput
from evolution.training.trainer import TrainedModel, _design_matrix, as_columns, data_length

MAX_ROWS = 500
"""Rows explained per call at most; larger inputs are sampled (see :func:`sample_positions`)."""

SAMPLE_SEED = 0
"""Seed of the row sample: fixed, so an explanation of the same rows is the same every time."""

SHIFT_THRESHOLD = 0.03
"""Attribution drift flags a feature whose attribution moved by more than 3 % of the baseline's total
(after removing the change common to all features; see :class:`AttributionShift`)."""

ADDITIVITY_RTOL = 1e-6

_BITMASK_CLASSES = 24
"""Categories one shap categorical split can tell apart.

shap's C++ tests membership with ``int(threshold) & (1 << (category - 1))`` where the threshold passes
through a C float, which holds integers exactly only up to 2**24. A feature with more categories is given,
per tree, a coarser code: categories that every split of that tree on that feature sends the same way share
one class (see :func:`_class_partition`)."""

Rows = Sequence[Mapping[str, Any]]
Columns = Mapping[str, np.ndarray]


@dataclass(frozen=True, eq=False)
class Explanation:
    """SHAP values of a model for some rows; ``values[i, j]`` is ``features[j]``'s contribution to row i.

    Exact: ``base_value + values[i].sum() == predictions[i]`` (checked when built). ``data`` holds the
    features as given (category names, None for missing) for display; ``row_indices`` are the explained rows'
    positions in the input, which differ from ``range(n)`` only when the input was sampled.
    """

    features: list[str]
    base_value: float
    values: np.ndarray
    predictions: np.ndarray
    data: list[dict[str, Any]]
    row_indices: np.ndarray
    n_input: int

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])


class Contribution(BaseModel):
    model_config = ConfigDict(frozen=True)

    feature: str
    """A feature name, or ``"N other features"`` for the folded remainder of a truncated waterfall."""
    value: Any
    """The feature's value in this row (None for missing or for the folded remainder)."""
    shap: float


class Waterfall(BaseModel):
    """One forecast decomposed: ``base_value + sum(c.shap for c in contributions) == prediction``."""

    model_config = ConfigDict(frozen=True)

    row_index: int
    base_value: float
    contributions: list[Contribution]
    """Largest |shap| first (ties by feature name)."""
    prediction: float


class AttributionShift(BaseModel):
    """How much one feature's attribution (mean |SHAP|) moved between the baseline and the window.

    The flag rule, and why it is not a plain comparison of shares:

    1. ``ratio_j = window_mean_abs_j / baseline_mean_abs_j`` for every feature.
    2. ``window_scale`` = the median of those ratios, each weighted by the feature's baseline mean |SHAP|.
       This is the change common to all features: a drier window lowers every yield and so every
       attribution a little, and any two samples differ in overall level. A plain total would be dominated
       by the features that did drift, and makes shares zero-sum: when weather features gain share, crop
       "loses" share although nothing about crop changed (on the demo drift, crop's share falls by 3-5
       points, as much as rain's rises). The weighted median ignores a minority of movers as long as the
       features that did not drift carry at least half of the attribution.
    3. ``shift_j = (window_mean_abs_j / window_scale - baseline_mean_abs_j) / sum(baseline_mean_abs)``: the
       feature's own change, in units of the baseline's total attribution.
    4. ``flagged = abs(shift_j) > threshold`` (default :data:`SHIFT_THRESHOLD` = 0.03). Measured against the
       total, a feature carrying 1 % of the attribution cannot flag on sampling noise. On the demo data with
       500 rows a side (ten seeds), undrifted windows stay below 0.022; the default drift moves NDVI and
       rain by 0.045-0.11, GDD and temperature by 0.03-0.05, and the other features by less than 0.012.

    ``baseline_share`` / ``window_share`` (mean |SHAP| over each side's own total) are for display.
    """

    model_config = ConfigDict(frozen=True)

    feature: str
    baseline_mean_abs: float
    window_mean_abs: float
    relative_change: float | None
    """(window - baseline) / baseline of the mean |SHAP|, not rescaled; None when the baseline mean is 0."""
    baseline_share: float
    window_share: float
    window_scale: float
    """The change common to all features (step 2); the same for every feature of one comparison."""
    shift: float
    flagged: bool


def shap_values(
    model: TrainedModel, data: Rows | Columns, max_rows: int = MAX_ROWS, seed: int = SAMPLE_SEED
) -> Explanation:
    """Exact path-dependent TreeSHAP of ``model`` for ``data`` (rows or columns), at most ``max_rows`` rows.

    Raises InvalidInput for empty input or a bad ``max_rows``; EvolutionError if the explanation would not
    add up to the model's predictions (which would mean the tree conversion no longer matches scikit-learn).
    """
    if max_rows < 1:
        raise InvalidInput(f"max_rows must be >= 1, got {max_rows}")
    n_input = data_length(data)
    if n_input == 0:
        raise InvalidInput("no rows to explain")
    positions = sample_positions(n_input, max_rows, seed)
    columns = as_columns(data, model.config.features, model.config.categorical)
    if len(positions) < n_input:
        columns = {name: col[positions] for name, col in columns.items()}
    n = len(positions)

    converted = _converted(model.estimator)
    matrix = _design_matrix(columns, model.config, model.encoders, n)
    phi = converted.explain(matrix)
    predictions = model.predict(columns)
    _check_additive(converted.base_value, phi, predictions)
    return Explanation(
        features=model.features,
        base_value=converted.base_value,
        values=phi,
        predictions=predictions,
        data=_display_rows(columns, model.features, n),
        row_indices=positions,
        n_input=n_input,
    )


def sample_positions(n: int, max_rows: int, seed: int = SAMPLE_SEED) -> np.ndarray:
    """All positions when ``n <= max_rows``, else ``max_rows`` of them drawn without replacement, sorted."""
    if n <= max_rows:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_rows, replace=False))


def global_importance(explanation: Explanation) -> list[tuple[str, float]]:
    """(feature, mean |SHAP|) over the explained rows, most important first (ties by name)."""
    means = np.mean(np.abs(explanation.values), axis=0)
    pairs = [(name, float(v)) for name, v in zip(explanation.features, means, strict=True)]
    return sorted(pairs, key=lambda p: (-p[1], p[0]))


def waterfall(explanation: Explanation, index: int, top: int | None = None) -> Waterfall:
    """Row ``index`` of the explanation as base value, contributions by |SHAP|, and prediction.

    With ``top``, only the ``top`` largest contributions are listed and the rest are folded into one
    ``"N other features"`` entry, so the contributions still add up to the prediction.
    """
    if not 0 <= index < explanation.n_rows:
        raise InvalidInput(f"row index {index} is outside the explanation's {explanation.n_rows} rows")
    if top is not None and top < 1:
        raise InvalidInput(f"top must be >= 1, got {top}")
    row = explanation.data[index]
    items = [
        Contribution(feature=name, value=row.get(name), shap=float(v))
        for name, v in zip(explanation.features, explanation.values[index], strict=True)
    ]
    items.sort(key=lambda c: (-abs(c.shap), c.feature))
    if top is not None and len(items) > top:
        rest = items[top:]
        items = [
            *items[:top],
            Contribution(feature=f"{len(rest)} other features", value=None, shap=sum(c.shap for c in rest)),
        ]
    return Waterfall(
        row_index=int(explanation.row_indices[index]),
        base_value=explanation.base_value,
        contributions=items,
        prediction=float(explanation.predictions[index]),
    )


def attribution_drift(
    model: TrainedModel,
    baseline: Rows | Columns,
    window: Rows | Columns,
    threshold: float = SHIFT_THRESHOLD,
    max_rows: int = MAX_ROWS,
    seed: int = SAMPLE_SEED,
) -> list[AttributionShift]:
    """Explain ``model`` on both sides (each sampled to ``max_rows`` rows) and compare the attributions.

    A page that already holds the two explanations should call :func:`compare_attributions` instead.
    """
    _check_threshold(threshold)
    return compare_attributions(
        shap_values(model, baseline, max_rows, seed), shap_values(model, window, max_rows, seed), threshold
    )


def compare_attributions(
    baseline: Explanation, window: Explanation, threshold: float = SHIFT_THRESHOLD
) -> list[AttributionShift]:
    """Per feature, mean |SHAP| on baseline vs window, and the flag of :class:`AttributionShift`'s rule.

    Largest |shift| first (ties by name). Both explanations must be of the same features (the same model,
    or two models of one line being compared on the same footing).
    """
    _check_threshold(threshold)
    if baseline.features != window.features:
        raise InvalidInput(f"explanations have different features: {baseline.features} vs {window.features}")
    before = np.mean(np.abs(baseline.values), axis=0)
    after = np.mean(np.abs(window.values), axis=0)
    total = float(before.sum())
    scale = _common_scale(before, after)
    before_share = _shares(before)
    after_share = _shares(after)
    shifts = []
    for j, name in enumerate(baseline.features):
        b, a = float(before[j]), float(after[j])
        shift = (a / scale - b) / total if total > 0.0 else 0.0
        shifts.append(
            AttributionShift(
                feature=name,
                baseline_mean_abs=b,
                window_mean_abs=a,
                relative_change=(a - b) / b if b > 0.0 else None,
                baseline_share=float(before_share[j]),
                window_share=float(after_share[j]),
                window_scale=scale,
                shift=shift,
                flagged=abs(shift) > threshold,
            )
        )
    return sorted(shifts, key=lambda s: (-abs(s.shift), s.feature))


def _common_scale(before: np.ndarray, after: np.ndarray) -> float:
    """Median of after/before over the features, weighted by ``before`` (1.0 when nothing is attributed)."""
    used = before > 0.0
    if not np.any(used) or not np.any(after[used] > 0.0):
        return 1.0
    ratios = after[used] / before[used]
    weights = before[used]
    order = np.argsort(ratios, kind="stable")
    cumulative = np.cumsum(weights[order]) / weights.sum()
    scale = float(ratios[order][np.searchsorted(cumulative, 0.5)])
    return scale if scale > 0.0 else 1.0  # most of the attribution vanished: nothing common to remove


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold < 1.0:
        raise InvalidInput(f"threshold is a share of the total attribution, in (0, 1); got {threshold}")


def _shares(means: np.ndarray) -> np.ndarray:
    total = float(means.sum())
    return means / total if total > 0.0 else np.zeros_like(means)


def _check_additive(base: float, phi: np.ndarray, predictions: np.ndarray) -> None:
    error = np.abs(base + phi.sum(axis=1) - predictions)
    allowed = ADDITIVITY_RTOL * np.maximum(1.0, np.abs(predictions))
    if np.any(error > allowed):
        worst = int(np.argmax(error - allowed))
        raise EvolutionError(
            f"SHAP values do not add up to the model's prediction (row {worst}: base {base:.6f} + "
            f"sum {phi[worst].sum():.6f} != {predictions[worst]:.6f}); the tree conversion does not match "
            "the installed scikit-learn or shap"
        )


def _display_rows(columns: Mapping[str, np.ndarray], features: Sequence[str], n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for name in features:
        col = columns.get(name)
        for i in range(n):
            v = None if col is None else col[i]
            if isinstance(v, float | np.floating):
                v = float(v) if np.isfinite(v) else None
            out[i][name] = v
    return out


# --- the tree conversion -------------------------------------------------------------------------------


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


class _ConvertedModel:
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
            class_of = _class_partition(splits, n_codes, f)
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


def _class_partition(splits: Mapping[int, Mapping[int, bool]], n_codes: int, feature: int) -> list[int]:
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


_cache: weakref.WeakKeyDictionary[HistGradientBoostingRegressor, _ConvertedModel] = (
    weakref.WeakKeyDictionary()
)
_cache_lock = threading.Lock()


def _converted(estimator: HistGradientBoostingRegressor) -> _ConvertedModel:
    """The conversion of ``estimator``, built once per fitted estimator object (pages explain repeatedly)."""
    with _cache_lock:
        found = _cache.get(estimator)
        if found is None:
            found = _ConvertedModel(estimator)
            _cache[estimator] = found
        return found
