"""SHAP explanations of served models, and attribution drift between two windows.

For the built-in format, exact TreeSHAP: the trees are converted for shap by :mod:`evolution.training.tree_conversion`
(which says why shap's own conversion will not do). The result is exact path-dependent TreeSHAP of the model as
served.

Any other model (an ONNX model, through the model-format port) gets a model-agnostic *estimate*: shap's
:class:`~shap.SamplingExplainer` (Štrumbelj and Kononenko's Shapley sampling values) over a background sample, which
needs nothing of the model but its predictions. Each feature's value is the mean, over sampled feature orderings and
background rows, of what adding the feature changes; with the few samples it can afford that is an estimate, and the
explanation says so (:attr:`Explanation.estimate`: the explainer, the background's size, the samples). shap then
corrects the sum to the model's output, so the check below holds for estimates too, to a looser tolerance. (Not
shap's PermutationExplainer: its first call in a process compiles shap's numba masking code, 10-20 s on a busy 2-core
machine, and the page would wait for it.)

Every explanation is checked (base value + sum of SHAP values == the model's prediction, to 1e-6 relative for
TreeSHAP, 1e-4 for an estimate) and raises rather than return an explanation that is not.

Row caps: exact TreeSHAP costs about 1 ms per row for a 200-tree model (about 0.5 s for 500 rows on a busy
2-core machine; the conversion, about 30 ms, is done once per fitted estimator), and pages may hand over a
whole snapshot, so each call explains at most ``max_rows`` rows (default :data:`MAX_ROWS`), a seeded random
sample of positions, so the same input always gives the same explanation. An estimate costs about
``2 x samples x features`` model evaluations per row, in one call of the model per feature, so it explains at most
:data:`ESTIMATE_MAX_ROWS` rows with :data:`ESTIMATE_SAMPLES` samples per feature (1-2 s for 50 rows of a 12-feature
model on a busy 2-core machine).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from evolution.errors import EvolutionError, InvalidInput
from evolution.training.columns import as_columns, data_length
from evolution.training.design_matrix import design_matrix
from evolution.training.formats import ServedModel
from evolution.training.trainer import TrainedModel
from evolution.training.tree_conversion import converted_model

MAX_ROWS = 500
"""Rows explained per call at most; larger inputs are sampled (see :func:`sample_positions`)."""

SAMPLE_SEED = 0
"""Seed of the row sample: fixed, so an explanation of the same rows is the same every time."""

SHIFT_THRESHOLD = 0.03
"""Attribution drift flags a feature whose attribution moved by more than 3 % of the baseline's total
(after removing the change common to all features; see :class:`AttributionShift`)."""

ADDITIVITY_RTOL = 1e-6

ESTIMATE_MAX_ROWS = 50
"""Rows an estimate explains per call at most (fewer than :data:`MAX_ROWS`: each costs hundreds of evaluations, and
shap draws every sample in a Python loop)."""

ESTIMATE_BACKGROUND_ROWS = 100
"""Background rows an estimate draws (seeded): a feature outside a coalition takes the value of one of them."""

ESTIMATE_SAMPLES = 32
"""Sampled (ordering, background row) pairs per feature and explained row, each evaluated with and without it."""

ESTIMATE_ADDITIVITY_RTOL = 1e-4
"""shap corrects an estimate's sum by a ridge step weighted 1e6 to one, which leaves about a millionth of the error
it corrected: looser than TreeSHAP's exact sum, and still far below anything a page shows."""

ESTIMATE_EXPLAINER = "shap.SamplingExplainer"

_estimating = threading.Lock()
"""shap's SamplingExplainer draws its samples from numpy's global generator: one estimate at a time, seeded, keeps
each reproducible, and the generator's state is put back afterwards."""

Rows = Sequence[Mapping[str, Any]]
Columns = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """How a model-agnostic explanation was estimated: by which explainer, on how large a sample."""

    explainer: str
    background_rows: int
    """Rows drawn as the background: a feature outside a coalition takes their values; the base value is the
    model's mean prediction on them."""
    samples_per_feature: int
    """Sampled (feature ordering, background row) pairs per feature of each explained row."""
    evaluations_per_row: int
    """Model evaluations spent on each explained row."""


@dataclass(frozen=True, eq=False)
class Explanation:
    """SHAP values of a model for some rows; ``values[i, j]`` is ``features[j]``'s contribution to row i.

    ``base_value + values[i].sum() == predictions[i]`` (checked when built). ``data`` holds the
    features as given (category names, None for missing) for display; ``row_indices`` are the explained rows'
    positions in the input, which differ from ``range(n)`` only when the input was sampled. ``estimate`` is None
    for exact TreeSHAP, and says how the values were estimated otherwise.
    """

    features: list[str]
    base_value: float
    values: np.ndarray
    predictions: np.ndarray
    data: list[dict[str, Any]]
    row_indices: np.ndarray
    n_input: int
    estimate: Estimate | None = None

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def exact(self) -> bool:
        return self.estimate is None

    @property
    def method(self) -> str:
        """One line for a page: exact, or an estimate with its sample sizes."""
        if self.estimate is None:
            return f"exact TreeSHAP of {self.n_rows} rows"
        e = self.estimate
        return (
            f"estimate ({e.explainer}): {self.n_rows} rows explained, {e.samples_per_feature} samples per "
            f"feature each, against a background sample of {e.background_rows} rows"
        )


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
    model: ServedModel,
    data: Rows | Columns,
    max_rows: int = MAX_ROWS,
    seed: int = SAMPLE_SEED,
    background: Rows | Columns | None = None,
) -> Explanation:
    """SHAP values of ``model`` for ``data`` (rows or columns): exact TreeSHAP for the built-in format (at most
    ``max_rows`` rows), a sampling estimate for any other (at most ``min(max_rows, ESTIMATE_MAX_ROWS)`` rows,
    against a sample of ``background``, or of ``data`` when None; TreeSHAP needs no background).

    Raises InvalidInput for empty input or a bad ``max_rows``; EvolutionError if the explanation would not
    add up to the model's predictions (which would mean the tree conversion no longer matches scikit-learn).
    """
    if max_rows < 1:
        raise InvalidInput(f"max_rows must be >= 1, got {max_rows}")
    n_input = data_length(data)
    if n_input == 0:
        raise InvalidInput("no rows to explain")
    if not isinstance(model, TrainedModel):
        return _estimated(model, data, min(max_rows, ESTIMATE_MAX_ROWS), seed, background)
    positions = sample_positions(n_input, max_rows, seed)
    columns = as_columns(data, model.config.features, model.config.categorical)
    if len(positions) < n_input:
        columns = {name: col[positions] for name, col in columns.items()}
    n = len(positions)

    converted = converted_model(model.estimator)
    matrix = design_matrix(columns, model.config, model.encoders, n)
    phi = converted.explain(matrix)
    predictions = model.predict(columns)
    _check_additive(
        converted.base_value,
        phi,
        predictions,
        "the tree conversion does not match the installed scikit-learn or shap",
    )
    return Explanation(
        features=model.features,
        base_value=converted.base_value,
        values=phi,
        predictions=predictions,
        data=_display_rows(columns, model.features, n),
        row_indices=positions,
        n_input=n_input,
    )


def _estimated(
    model: ServedModel, data: Rows | Columns, max_rows: int, seed: int, background: Rows | Columns | None
) -> Explanation:
    """shap's SamplingExplainer over a seeded background sample; categories travel to shap as codes."""
    features, categorical = model.features, set(model.categorical)
    n_input = data_length(data)
    positions = sample_positions(n_input, max_rows, seed)
    columns = _sampled(as_columns(data, features, categorical), positions)
    reference = data if background is None else background
    n_background = data_length(reference)
    if n_background == 0:
        raise InvalidInput("no background rows to estimate SHAP values against")
    back_positions = sample_positions(n_background, ESTIMATE_BACKGROUND_ROWS, seed)
    back = _sampled(as_columns(reference, features, categorical), back_positions)
    # shap mixes rows of one numeric matrix (the row explained, a background row), so each category becomes its
    # index in a list built from both sides (NaN stays missing), and the model sees the names again.
    codes = {
        name: sorted({v for side in (columns, back) if name in side for v in side[name] if v is not None})
        for name in categorical
    }
    n = len(positions)
    matrix = _coded(columns, features, codes, n)
    background_matrix = _coded(back, features, codes, len(back_positions))

    def predict(coded: np.ndarray) -> np.ndarray:
        return model.predict(_decoded(coded, features, codes))

    import shap  # heavy (numba, pandas): loaded on the first estimate, as tree_conversion does for TreeSHAP

    samples = ESTIMATE_SAMPLES
    with _estimating:
        state = np.random.get_state()
        try:
            np.random.seed(seed)
            explainer = shap.SamplingExplainer(predict, background_matrix)
            phi = explainer.shap_values(matrix, nsamples=samples * len(features), silent=True)
            base = float(np.asarray(explainer.expected_value).reshape(-1)[0])
        finally:
            np.random.set_state(state)
    phi = np.asarray(phi, dtype=np.float64).reshape(n, len(features))
    predictions = model.predict(columns)
    _check_additive(
        base, phi, predictions, "shap no longer corrects the estimate's sum", rtol=ESTIMATE_ADDITIVITY_RTOL
    )
    return Explanation(
        features=list(features),
        base_value=base,
        values=phi,
        predictions=predictions,
        data=_display_rows(columns, features, n),
        row_indices=positions,
        n_input=n_input,
        estimate=Estimate(
            explainer=ESTIMATE_EXPLAINER,
            background_rows=int(background_matrix.shape[0]),
            samples_per_feature=samples,
            evaluations_per_row=2 * samples * len(features) + 1,
        ),
    )


def _sampled(columns: dict[str, np.ndarray], positions: np.ndarray) -> dict[str, np.ndarray]:
    return {name: col[positions] for name, col in columns.items()}


def _coded(
    columns: Mapping[str, np.ndarray], features: Sequence[str], codes: Mapping[str, list[str]], n: int
) -> np.ndarray:
    matrix = np.full((n, len(features)), np.nan, dtype=np.float64)
    for j, name in enumerate(features):
        col = columns.get(name)
        if col is None:
            continue
        if name in codes:
            index = {c: float(i) for i, c in enumerate(codes[name])}
            matrix[:, j] = [np.nan if v is None else index[v] for v in col]
        else:
            matrix[:, j] = col
    return matrix


def _decoded(
    matrix: np.ndarray, features: Sequence[str], codes: Mapping[str, list[str]]
) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(features):
        if name in codes:
            names = np.asarray([*codes[name], None], dtype=object)
            code = matrix[:, j]
            columns[name] = names[np.where(np.isfinite(code), code, len(codes[name])).astype(np.intp)]
        else:
            columns[name] = matrix[:, j]
    return columns


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
    model: ServedModel,
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


def _check_additive(
    base: float, phi: np.ndarray, predictions: np.ndarray, cause: str, rtol: float = ADDITIVITY_RTOL
) -> None:
    error = np.abs(base + phi.sum(axis=1) - predictions)
    allowed = rtol * np.maximum(1.0, np.abs(predictions))
    if np.any(error > allowed):
        worst = int(np.argmax(error - allowed))
        raise EvolutionError(
            f"SHAP values do not add up to the model's prediction (row {worst}: base {base:.6f} + "
            f"sum {phi[worst].sum():.6f} != {predictions[worst]:.6f}); {cause}"
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
