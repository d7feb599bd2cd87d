"""Serialisable models of the data-quality checks (spec statistics.md section 1b).

Three kinds of model: the floors (``QualityConfig``, a tenant setting nested in ``DriftConfig``), what a baseline
freezes for the checks (``FeatureQuality``, optional on ``FeatureBaseline`` so baselines made before the checks still
load), and a scan's verdicts (``QualityCheck`` per feature and check, ``QualityResult`` per report).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Support bounds of out_of_range: the baseline's 0.001 and 0.999 quantiles (frozen with the baseline).
SUPPORT_QUANTILES = (0.001, 0.999)
# A label or coded feature keeps its full set of seen values (for unseen_categories) up to this many distinct values;
# above it the set is not stored and unseen_categories reports not_measured ("too_many_categories").
MAX_SEEN_VALUES = 2_000
# A numeric feature's values holding at least this share of the baseline are counted one by one in windows (stuck).
HEAVY_VALUE_SHARE = 0.01
MAX_HEAVY_VALUES = 10
# The window's values outside the kept categories are counted exactly up to this many distinct ones (stuck).
MAX_WINDOW_OTHERS = 1_000

ReasonCode = Literal["out_of_range", "missing_rate", "unseen_categories", "stuck"]
CheckStatus = Literal["ok", "alert", "insufficient_data", "not_measured"]
NotMeasuredReason = Literal[
    "baseline_lacks_quality_data",  # a baseline made before the checks (recompute it from its snapshot)
    "high_cardinality",  # a non-numeric feature with more than half its baseline values distinct
    "too_many_categories",  # more than MAX_SEEN_VALUES distinct baseline values: the seen set is not kept
    "too_many_distinct_values",  # the window's most frequent value cannot be named (see stuck)
]
QualityLevel = Literal["ok", "alert", "insufficient_data"]


class QualityConfig(BaseModel):
    """Floors of the section 1b checks: a check alerts only when its BH-adjusted p < alpha and its effect passes."""

    model_config = ConfigDict(extra="forbid")

    out_of_range_min_share: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="out_of_range: share of window values outside [lo, hi] needed, at least",
    )
    out_of_range_baseline_multiple: float = Field(
        5.0, ge=0.0, description="out_of_range: and at least this multiple of the baseline's share outside"
    )
    missing_rate_min_increase: float = Field(
        0.05, ge=0.0, le=1.0, description="missing_rate: rise of the missing share needed (0.05 = 5 points)"
    )
    unseen_min_share: float = Field(
        0.05, ge=0.0, le=1.0, description="unseen_categories: share of never-seen values needed"
    )
    stuck_min_share: float = Field(
        0.95, gt=0.5, le=1.0, description="stuck: share of the window's most frequent value needed (> 0.5)"
    )
    high_cardinality_share: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="a non-numeric feature with more distinct baseline values is not_measured",
    )
    min_values: int = Field(50, ge=2, description="fewer non-missing window values report insufficient_data")


class FeatureQuality(BaseModel):
    """What one feature's baseline freezes for the checks. Counts are of non-missing baseline values."""

    model_config = ConfigDict(extra="forbid")

    present: int = Field(ge=0, description="non-missing baseline values")
    distinct: int = Field(ge=0, description="distinct non-missing baseline values")
    singletons: int = Field(ge=0, description="N1: values seen exactly once (Good-Turing)")
    lo: float | None = Field(None, description="0.001 quantile (numbers only)")
    hi: float | None = Field(None, description="0.999 quantile (numbers only)")
    below: int = Field(0, ge=0, description="baseline values below lo")
    above: int = Field(0, ge=0, description="baseline values above hi")
    heavy_values: list[float] = Field(
        default_factory=list,
        description="numeric bins: values holding >= 1 % of the baseline, counted exactly",
    )
    heavy_counts: list[int] = Field(default_factory=list)
    seen: list[str] | None = Field(
        None, description="labels: every distinct label (None above MAX_SEEN_VALUES)"
    )
    seen_values: list[float] | None = Field(
        None, description="coded numbers: every distinct value, sorted (None above MAX_SEEN_VALUES)"
    )
    seen_counts: list[int] | None = Field(None, description="baseline count of each seen label or value")
    other_max: int = Field(
        0, ge=0, description="largest baseline count of a value outside the kept categories"
    )

    @model_validator(mode="after")
    def _consistent(self) -> FeatureQuality:
        if (self.lo is None) != (self.hi is None) or (
            self.lo is not None and self.hi is not None and self.hi < self.lo
        ):
            raise ValueError("quality: lo and hi come together, lo <= hi")
        if self.below + self.above > self.present or self.distinct > self.present:
            raise ValueError("quality: counts exceed the non-missing baseline values")
        if len(self.heavy_values) != len(self.heavy_counts):
            raise ValueError("quality: one count per heavy value")
        seen = self.seen if self.seen is not None else self.seen_values
        if self.seen is not None and self.seen_values is not None:
            raise ValueError("quality: seen labels or seen values, not both")
        if (seen is None) != (self.seen_counts is None) or (
            seen is not None and len(seen) != len(self.seen_counts or [])
        ):
            raise ValueError("quality: one count per seen value")
        return self

    @property
    def outside(self) -> int:
        """c0: baseline values outside [lo, hi]."""
        return self.below + self.above


class QualityCheck(BaseModel):
    """One check on one feature. ``k`` of ``m``: the counted values (rows for missing_rate) and their total."""

    feature: str
    check: ReasonCode
    status: CheckStatus
    reason: NotMeasuredReason | None = Field(None, description="why a check is not_measured")
    k: int | None = None
    m: int | None = None
    p_value: float | None = None
    p_adjusted: float | None = Field(
        None, description="Benjamini-Hochberg across the report's quality checks"
    )
    effect: float | None = Field(None, description="k/m; for missing_rate the rise of the missing share")
    floor: float | None = Field(None, description="the effect needed to alert")
    baseline_rate: float | None = Field(None, description="pi0, pi_u, pi of v, or the baseline missing share")
    z: float | None = Field(None, description="missing_rate: pooled two-proportion z")
    value: str | None = Field(
        None, description="stuck: the value, or the band [a, b) of a continuous feature"
    )
    direction: Literal["above", "below", "both"] | None = Field(None, description="out_of_range: which side")
    bounds: tuple[float, float] | None = Field(None, description="out_of_range: the usual range [lo, hi]")
    examples: list[str] = Field(
        default_factory=list, description="unseen_categories: the commonest new values"
    )
    description: str = Field(description="the verdict in plain words")


class QualityResult(BaseModel):
    checks: list[QualityCheck]
    level: QualityLevel = Field(description="alert when any check fires; ok when any was judged")
    config: QualityConfig
    alpha: float
    method: str = (
        "one-sided tests per spec statistics.md 1b (binomial for out_of_range, unseen_categories and stuck; pooled "
        "two-proportion z for missing_rate), Benjamini-Hochberg across this report's quality checks (a family apart "
        "from drift); a check alerts when its adjusted p < alpha and its effect passes its floor"
    )

    @property
    def alerts(self) -> list[QualityCheck]:
        return [c for c in self.checks if c.status == "alert"]
