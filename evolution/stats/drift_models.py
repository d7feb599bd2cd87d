"""Serialisable models of the drift engine: per-tenant thresholds, the frozen baseline, and a scan's result.

A baseline is small (edges, counts, summary statistics), so it is stored once and reused for every window.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evolution.stats.quality_models import FeatureQuality, QualityConfig, QualityResult

OTHER = "__other__"
MISSING = "__missing__"

Status = Literal["ok", "warn", "alert", "insufficient_data", "not_measured"]
FeatureKind = Literal["numeric", "categorical"]


class DriftConfig(BaseModel):
    """Per-tenant drift thresholds. Defaults follow spec statistics.md section 1."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(
        0.01, gt=0.0, lt=1.0, description="level of the chi-square and Welch tests (after BH)"
    )
    warn_psi: float = Field(0.10, ge=0.0, description="PSI a significant drift needs to warn")
    alert_psi: float = Field(0.25, ge=0.0, description="PSI a significant drift needs to alert")
    min_window: int = Field(50, ge=2, description="fewer window rows than this report insufficient_data")
    bins: int = Field(10, ge=2, description="quantile bins of a numeric feature")
    top_k: int = Field(20, ge=1, description="most frequent categories kept; the rest go to __other__")
    min_share: float = Field(0.005, ge=0.0, lt=1.0, description="share a category needs to be kept")
    categorical_max_distinct: int = Field(
        20, ge=0, description="numeric with at most this many values is categorical"
    )
    mae_material_change: float = Field(0.10, gt=0.0, description="relative MAE increase that matters")
    quality: QualityConfig = Field(
        default_factory=QualityConfig, description="floors of the data-quality checks (statistics.md 1b)"
    )

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> DriftConfig:
        if self.alert_psi < self.warn_psi:
            raise ValueError(f"alert_psi ({self.alert_psi}) must not be below warn_psi ({self.warn_psi})")
        return self


def _edge_label(x: float) -> str:
    return f"{x:.6g}"


class FeatureBaseline(BaseModel):
    """One feature's frozen binning and baseline counts.

    Numeric: ``edges`` are the inner edges (baseline quantiles); bins are ``(-inf, e1)``, ``[e1, e2)``, ...,
    ``[ek, +inf)`` and then ``__missing__``. Categorical: ``categories`` then ``__other__`` then
    ``__missing__``.
    ``category_values`` holds the numbers of a numeric feature that is binned as categorical (<= 20 distinct
    values), so windows are matched by value rather than by string.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: FeatureKind
    edges: list[float] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    category_values: list[float] | None = None
    counts: list[int]
    n: int = Field(ge=0)
    missing_rate: float = Field(ge=0.0, le=1.0)
    mean: float | None = None
    std: float | None = None
    quality: FeatureQuality | None = Field(
        None, description="frozen for the data-quality checks; None in a baseline made before them"
    )

    @model_validator(mode="after")
    def _consistent(self) -> FeatureBaseline:
        if self.kind == "numeric":
            if self.categories or self.category_values is not None:
                raise ValueError(f"feature {self.name!r}: a numeric baseline has no categories")
            if not all(math.isfinite(e) for e in self.edges):
                raise ValueError(f"feature {self.name!r}: edges must be finite")
            if any(b <= a for a, b in itertools.pairwise(self.edges)):
                raise ValueError(f"feature {self.name!r}: edges must be strictly increasing")
            expected = len(self.edges) + 2
        else:
            if self.edges:
                raise ValueError(f"feature {self.name!r}: a categorical baseline has no edges")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"feature {self.name!r}: categories must be distinct")
            if self.category_values is not None and len(self.category_values) != len(self.categories):
                raise ValueError(f"feature {self.name!r}: one category value per category")
            expected = len(self.categories) + 2
        if len(self.counts) != expected:
            raise ValueError(f"feature {self.name!r}: expected {expected} counts, got {len(self.counts)}")
        if any(c < 0 for c in self.counts) or sum(self.counts) != self.n:
            raise ValueError(f"feature {self.name!r}: counts must be non-negative and sum to n={self.n}")
        if self.quality is not None and self.quality.present != self.n - self.counts[-1]:
            raise ValueError(
                f"feature {self.name!r}: quality data must count the non-missing baseline values"
            )
        return self

    @property
    def numeric_values(self) -> bool:
        """Whether the feature's values are numbers (numeric bins, or categories matched by value)."""
        return self.kind == "numeric" or self.category_values is not None

    def high_cardinality(self, share: float) -> bool:
        """A non-numeric feature with more than ``share`` of its baseline values distinct (identifiers, free text)."""
        q = self.quality
        return not self.numeric_values and q is not None and q.present > 0 and q.distinct > share * q.present

    def bin_labels(self) -> list[str]:
        if self.kind == "numeric":
            bounds = [-math.inf, *self.edges, math.inf]
            labels = []
            for lo, hi in itertools.pairwise(bounds):
                left = "(-inf" if lo == -math.inf else f"[{_edge_label(lo)}"
                right = "inf)" if hi == math.inf else f"{_edge_label(hi)})"
                labels.append(f"{left}, {right}")
            return [*labels, MISSING]
        return [*self.categories, OTHER, MISSING]


class ErrorBaseline(BaseModel):
    """The champion's absolute errors on the baseline: count, mean (the baseline MAE) and unbiased
    variance."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=2)
    mean: float = Field(ge=0.0)
    var: float = Field(ge=0.0)


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: list[FeatureBaseline]
    errors: ErrorBaseline | None = None
    config: DriftConfig = Field(default_factory=DriftConfig)

    @model_validator(mode="after")
    def _unique_names(self) -> Baseline:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names in a baseline must be unique")
        return self

    def feature(self, name: str) -> FeatureBaseline:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


class FeatureDrift(BaseModel):
    """One feature's verdict. ``psi``/``kl``/p-values are None when the window is too small to judge, or the
    feature is not measured (a non-numeric feature whose baseline values are mostly distinct: binning it would
    put nearly every value in ``__other__`` on both sides and read PSI 0)."""

    feature: str
    kind: FeatureKind
    status: Status
    psi: float | None
    kl: float | None = Field(description="KL(current || baseline)")
    p_value: float | None = Field(description="chi-square p-value of PSI")
    p_adjusted: float | None = Field(
        description="Benjamini-Hochberg adjusted p-value across the scan's features"
    )
    kl_p_value: float | None = None
    dof: int | None = Field(None, description="chi-square degrees of freedom: non-empty bins - 1")
    n: int
    m: int
    baseline_missing_rate: float
    window_missing_rate: float | None
    bin_labels: list[str]
    baseline_counts: list[int]
    window_counts: list[int]
    reason: str | None = Field(None, description="why the feature is not_measured")


class MaeDrift(BaseModel):
    """Champion MAE on the window against the baseline; one-sided Welch z on the absolute errors."""

    status: Status
    baseline_mae: float
    window_mae: float | None
    ratio: float | None = Field(description="window MAE / baseline MAE; None when the baseline MAE is 0")
    z: float | None
    p_value: float | None
    n: int
    m: int


class DriftResult(BaseModel):
    features: list[FeatureDrift]
    mae: MaeDrift | None
    level: Status
    config: DriftConfig
    quality: QualityResult | None = Field(
        None, description="data-quality checks (statistics.md 1b); None in reports made before them"
    )
    kl_direction: str = "KL(current||baseline)"
    method: str = (
        "PSI and KL on baseline-quantile bins with +0.5 smoothing; p from PSI/(1/n+1/m) ~ chi2(B-1) "
        "(Yurdakul 2018), Benjamini-Hochberg across features; MAE by one-sided Welch z"
    )
