"""Per-tenant settings kept in ``tenants.config``: drift decision thresholds and data-quality floors, identifier
columns, training knobs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evolution.errors import InvalidInput
from evolution.stats.drift_models import DriftConfig
from evolution.stats.quality_models import QualityConfig, ReasonCode

# Checks whose alert holds a window from retraining by default. out_of_range is left out: against the baseline's
# 0.999-quantile support it fires on a real shift beyond the historical range too (the demo's hotter, drier seasons
# trip it on temperature, GDD and irrigation), so alone it cannot tell breakage from a new world. It still alerts and
# notifies; a tenant that wants it to hold adds it (`evolution tenant configure --hold-on out_of_range`).
DEFAULT_HOLD_CHECKS: tuple[ReasonCode, ...] = ("missing_rate", "unseen_categories", "stuck")

# Decision thresholds may change at any time; binning (bins, top_k, …) is frozen with each champion's baseline.
DECISION_FIELDS = ("alpha", "warn_psi", "alert_psi", "min_window", "mae_material_change")


class DriftThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float | None = Field(default=None, gt=0.0, lt=1.0)
    warn_psi: float | None = Field(default=None, ge=0.0)
    alert_psi: float | None = Field(default=None, ge=0.0)
    min_window: int | None = Field(default=None, ge=2)
    mae_material_change: float | None = Field(default=None, gt=0.0)


class QualityFloors(BaseModel):
    """The tenant's floors of the data-quality checks (statistics.md 1b); None keeps the default of QualityConfig.

    Like the drift thresholds they are decision-time settings: a change applies to the next scan, whatever the
    baseline froze. The bounds are QualityConfig's, so a value refused here would be refused by the scan too.
    """

    model_config = ConfigDict(extra="forbid")

    out_of_range_min_share: float | None = Field(
        default=None, ge=0.0, le=1.0, description="share of window values outside the usual range needed"
    )
    out_of_range_baseline_multiple: float | None = Field(
        default=None, ge=0.0, description="and at least this multiple of the baseline's share outside"
    )
    missing_rate_min_increase: float | None = Field(
        default=None, ge=0.0, le=1.0, description="rise of the missing share needed (0.05 = 5 points)"
    )
    unseen_min_share: float | None = Field(
        default=None, ge=0.0, le=1.0, description="share of never-seen values needed"
    )
    stuck_min_share: float | None = Field(
        default=None, gt=0.5, le=1.0, description="share of the window's most frequent value needed"
    )
    high_cardinality_share: float | None = Field(
        default=None, gt=0.0, le=1.0, description="more distinct baseline values: not_measured"
    )
    min_values: int | None = Field(
        default=None, ge=2, description="fewer non-missing window values: insufficient_data"
    )


class Economics(BaseModel):
    """What a unit of forecast error is worth to the tenant, and what serving costs: the basis of ROI."""

    model_config = ConfigDict(extra="forbid")

    value_per_unit_error_usd: float = Field(
        default=25.0,
        ge=0.0,
        description="USD saved per unit of absolute error avoided, per forecast (e.g. per t/ha).",
    )
    serving_cost_per_1k_usd: float = Field(
        default=0.05, ge=0.0, description="USD per 1,000 predictions served."
    )
    target_unit: str = Field(default="t/ha", max_length=20)


class TenantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    economics: Economics = Field(default_factory=Economics)

    drift: DriftThresholds = Field(default_factory=DriftThresholds)
    quality: QualityFloors = Field(
        default_factory=QualityFloors, description="floors of the data-quality checks (statistics.md 1b)"
    )
    quality_hold_checks: list[ReasonCode] = Field(
        default_factory=lambda: list(DEFAULT_HOLD_CHECKS),
        description="Data-quality checks whose alert holds the window from retraining until an admin accepts it.",
    )
    id_columns: list[str] = Field(default_factory=lambda: ["field_id"], description="never used as features")
    training: dict[str, Any] = Field(default_factory=dict, description="TrainingConfig overrides")
    circuit_breaker_threshold: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Consecutive failed retrainings that disable retraining (None: the default, 3).",
    )
    baseline_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Signed baseline resets by model name (see evolution/drift/baselines.py).",
    )

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> TenantSettings:
        try:
            return cls.model_validate(raw or {})
        except ValidationError as error:
            first = error.errors()[0]
            got = f" (got {first['input']!r})" if first["type"] not in ("extra_forbidden", "missing") else ""
            raise InvalidInput(
                f"tenant settings: {'.'.join(map(str, first['loc']))}: {first['msg']}{got}"
            ) from None

    def merged(self, patch: dict[str, Any]) -> TenantSettings:
        data = self.model_dump()
        for key, value in patch.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        merged = TenantSettings.parse(data)
        merged.drift_config_over(DriftConfig())  # the combination must make sense (e.g. alert >= warn)
        return merged

    def drift_config_over(self, frozen: DriftConfig) -> DriftConfig:
        """The baseline's frozen config with this tenant's current decision thresholds and quality floors on top."""
        updates = {k: v for k, v in self.drift.model_dump().items() if v is not None and k in DECISION_FIELDS}
        floors = {k: v for k, v in self.quality.model_dump().items() if v is not None}
        try:
            quality = QualityConfig.model_validate({**frozen.quality.model_dump(), **floors})
            return DriftConfig.model_validate({**frozen.model_dump(), **updates, "quality": quality})
        except ValidationError as error:
            raise InvalidInput(f"drift thresholds: {error.errors()[0]['msg']}") from None
