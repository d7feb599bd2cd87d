"""Drift detection (spec statistics.md section 1): build a baseline once, scan windows against it.

``build_baseline`` freezes each feature's bins from the baseline; ``WindowAccumulator`` counts a window chunk
by chunk (counts add up, memory is bounded by one chunk, each value is read once); ``scan`` is the one-chunk
case. Per feature: PSI and KL(current || baseline) on +0.5-smoothed shares, chi-square p-values,
Benjamini-Hochberg across features, then warn/alert only when the drift is both significant and large. The MAE
of the champion is compared with a one-sided Welch test and a material-change threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from evolution.errors import InvalidInput
from evolution.progress import Advance, ProgressMeter, metered
from evolution.stats.binning import Tally, fit_feature, tallier_for
from evolution.stats.divergence import (
    active_bins,
    kl_divergence,
    kl_p_value,
    psi,
    psi_critical_value,
    psi_p_value,
    smoothed_shares,
)
from evolution.stats.drift_models import (
    MISSING,
    OTHER,
    Baseline,
    DriftConfig,
    DriftResult,
    ErrorBaseline,
    FeatureBaseline,
    FeatureDrift,
    MaeDrift,
    Status,
)
from evolution.stats.moments import EMPTY, Moments, merge, moments_of
from evolution.stats.multiple_testing import benjamini_hochberg
from evolution.stats.quality import judge_quality
from evolution.stats.quality_models import FeatureQuality, QualityCheck, QualityConfig, QualityResult

__all__ = [
    "MISSING",
    "OTHER",
    "Baseline",
    "DriftConfig",
    "DriftResult",
    "ErrorBaseline",
    "FeatureBaseline",
    "FeatureDrift",
    "FeatureQuality",
    "MaeDrift",
    "QualityCheck",
    "QualityConfig",
    "QualityResult",
    "WindowAccumulator",
    "benjamini_hochberg",
    "build_baseline",
    "kl_divergence",
    "psi",
    "psi_critical_value",
    "scan",
    "smoothed_shares",
]

_SEVERITY: dict[str, int] = {"insufficient_data": -1, "not_measured": -1, "ok": 0, "warn": 1, "alert": 2}


def _abs_errors(values: object, what: str) -> np.ndarray:
    e = np.asarray(values, dtype=np.float64).ravel()
    e = e[np.isfinite(e)]  # an error without a matured label is not an observation
    if np.any(e < 0):
        raise InvalidInput(f"{what}: absolute errors must be non-negative (pass |y - y_hat|, not residuals)")
    return e


def build_baseline(
    columns: Mapping[str, np.ndarray | Sequence[Any]],
    abs_errors: np.ndarray | None = None,
    config: DriftConfig | None = None,
    *,
    meter: ProgressMeter | None = None,
) -> Baseline:
    """Freeze bins and counts for every column, and the champion's error statistics if given.

    Float columns are numeric (NaN and +-inf are missing); object or string columns are categorical (None and
    NaN
    are missing); a numeric column with at most ``categorical_max_distinct`` distinct values, or fewer than
    two
    distinct quantile edges, is binned as categorical by value.
    """
    cfg = config or DriftConfig()
    if not columns:
        raise InvalidInput("build_baseline: no columns given")
    features = []
    with metered(meter, "fit the baseline", len(columns)) as advance:
        for name, values in columns.items():
            features.append(fit_feature(str(name), values, cfg))
            advance(1)
    errors = None
    if abs_errors is not None:
        e = _abs_errors(abs_errors, "baseline abs_errors")
        if e.size < 2:
            raise InvalidInput(
                "baseline abs_errors: at least two finite absolute errors are needed for a variance"
            )
        mo = moments_of(e)
        errors = ErrorBaseline(n=mo.n, mean=mo.mean, var=mo.variance)
    return Baseline(features=features, errors=errors, config=cfg)


class WindowAccumulator:
    """Counts a window chunk by chunk against a frozen baseline; ``result()`` may be called at any time.

    The same pass that counts each column into its drift bins tallies the data-quality checks (statistics.md 1b);
    ``result().quality`` holds their verdicts, a Benjamini-Hochberg family apart from the drift features'.
    """

    def __init__(self, baseline: Baseline) -> None:
        self._baseline = baseline
        self._counters = {f.name: tallier_for(f) for f in baseline.features}
        self._counts = {f.name: np.zeros(len(f.counts), dtype=np.int64) for f in baseline.features}
        self._tallies = {f.name: Tally(others=None if f.kind == "numeric" else {}) for f in baseline.features}
        self._errors: Moments = EMPTY

    @property
    def baseline(self) -> Baseline:
        return self._baseline

    def update(
        self,
        chunk: Mapping[str, np.ndarray],
        abs_errors: np.ndarray | None = None,
        advance: Advance | None = None,
    ) -> None:
        """Add one chunk. All of it is validated before any count changes, so a bad chunk leaves no trace.

        ``advance`` is told each column as it is counted.
        """
        missing = [name for name in self._counters if name not in chunk]
        if missing:
            raise InvalidInput(f"window chunk lacks baseline column(s): {', '.join(map(repr, missing))}")
        added = {}
        for name, counter in self._counters.items():
            added[name] = counter.tally(chunk[name])
            if advance is not None:
                advance(1)
        err = EMPTY
        if abs_errors is not None:
            if self._baseline.errors is None:
                raise InvalidInput(
                    "abs_errors given but the baseline has no error statistics (build it with them)"
                )
            err = moments_of(_abs_errors(abs_errors, "window abs_errors"))
        for name, (c, tally) in added.items():
            self._counts[name] += c
            self._tallies[name].add(tally)
        self._errors = merge(self._errors, err)

    def window_counts(self) -> dict[str, list[int]]:
        return {name: c.tolist() for name, c in self._counts.items()}

    def result(self) -> DriftResult:
        cfg = self._baseline.config
        features = self._baseline.features
        judged = [_judge_feature(f, self._counts[f.name], cfg) for f in features]
        sufficient = [i for i, d in enumerate(judged) if d.p_value is not None]
        if sufficient:
            adjusted = benjamini_hochberg([judged[i].p_value for i in sufficient])  # type: ignore[misc]
            for i, p_adj in zip(sufficient, adjusted, strict=True):
                judged[i] = _with_status(judged[i], float(p_adj), cfg)
        mae = (
            _judge_mae(self._baseline.errors, self._errors, cfg)
            if self._baseline.errors is not None
            else None
        )
        quality = judge_quality(features, self._counts, self._tallies, cfg)
        return DriftResult(
            features=judged, mae=mae, level=_overall_level(judged, mae), config=cfg, quality=quality
        )


def scan(
    baseline: Baseline,
    columns: Mapping[str, np.ndarray],
    abs_errors: np.ndarray | None = None,
    *,
    meter: ProgressMeter | None = None,
) -> DriftResult:
    """Scan one in-memory window (the single-chunk case of ``WindowAccumulator``); ``meter``: a task over the
    baseline's features."""
    acc = WindowAccumulator(baseline)
    with metered(meter, "compare the window", len(baseline.features)) as advance:
        acc.update(columns, abs_errors, advance)
    return acc.result()


def _judge_feature(f: FeatureBaseline, window: np.ndarray, cfg: DriftConfig) -> FeatureDrift:
    m = int(window.sum())
    common: dict[str, Any] = {
        "feature": f.name,
        "kind": f.kind,
        "n": f.n,
        "m": m,
        "baseline_missing_rate": f.missing_rate,
        "window_missing_rate": float(window[-1] / m) if m else None,
        "bin_labels": f.bin_labels(),
        "baseline_counts": list(f.counts),
        "window_counts": window.tolist(),
    }
    if f.high_cardinality(cfg.quality.high_cardinality_share):
        return FeatureDrift(
            status="not_measured",
            psi=None,
            kl=None,
            p_value=None,
            p_adjusted=None,
            reason="high_cardinality: free text or identifiers, most baseline values distinct",
            **common,
        )
    if m < cfg.min_window or f.n < cfg.min_window:
        return FeatureDrift(
            status="insufficient_data", psi=None, kl=None, p_value=None, p_adjusted=None, **common
        )
    base = np.asarray(f.counts)
    bins = active_bins(base, window)
    psi_value = psi(base, window)
    kl_value = kl_divergence(base, window)
    return FeatureDrift(
        status="ok",  # provisional: the status needs the BH-adjusted p-value
        psi=psi_value,
        kl=kl_value,
        p_value=psi_p_value(psi_value, f.n, m, bins),
        p_adjusted=None,
        kl_p_value=kl_p_value(kl_value, f.n, m, bins),
        dof=bins - 1,
        **common,
    )


def _with_status(d: FeatureDrift, p_adj: float, cfg: DriftConfig) -> FeatureDrift:
    assert d.psi is not None
    status: Status = "ok"
    if p_adj < cfg.alpha and d.psi >= cfg.alert_psi:
        status = "alert"
    elif p_adj < cfg.alpha and d.psi >= cfg.warn_psi:
        status = "warn"
    return d.model_copy(update={"p_adjusted": p_adj, "status": status})


def _judge_mae(base: ErrorBaseline, window: Moments, cfg: DriftConfig) -> MaeDrift:
    """Alert when r - 1 >= material change and the one-sided Welch z exceeds z(1 - alpha).

    Warn, by analogy with the PSI levels, when the increase is significant and at least half the material
    change.
    """
    if window.n < cfg.min_window:
        return MaeDrift(
            status="insufficient_data",
            baseline_mae=base.mean,
            window_mae=window.mean if window.n else None,
            ratio=None,
            z=None,
            p_value=None,
            n=base.n,
            m=window.n,
        )
    diff = window.mean - base.mean
    se = math.sqrt(base.var / base.n + window.variance / window.n)
    if se > 0:
        z = diff / se
        p = float(stats.norm.sf(z))
    else:  # both samples constant: the difference is exact
        z = 0.0 if diff == 0 else math.copysign(1e300, diff)  # finite, so the result stays JSON-safe
        p = 0.5 if diff == 0 else (0.0 if diff > 0 else 1.0)
    ratio = window.mean / base.mean if base.mean > 0 else None
    increase = (ratio - 1.0) if ratio is not None else (math.inf if diff > 0 else 0.0)
    significant = p < cfg.alpha
    status: Status = "ok"
    if significant and increase >= cfg.mae_material_change:
        status = "alert"
    elif significant and increase >= cfg.mae_material_change / 2:
        status = "warn"
    return MaeDrift(
        status=status,
        baseline_mae=base.mean,
        window_mae=window.mean,
        ratio=ratio,
        z=z,
        p_value=p,
        n=base.n,
        m=window.n,
    )


def _overall_level(features: list[FeatureDrift], mae: MaeDrift | None) -> Status:
    statuses = [d.status for d in features] + ([mae.status] if mae is not None else [])
    judged = [s for s in statuses if s not in ("insufficient_data", "not_measured")]
    if not judged:
        return "insufficient_data"
    return max(judged, key=lambda s: _SEVERITY[s])
