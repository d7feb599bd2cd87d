"""Per-tenant settings kept in ``tenants.config``: drift decision thresholds, identifier columns, training knobs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evolution.errors import InvalidInput
from evolution.stats.drift_models import DriftConfig

# Decision thresholds may change at any time; binning (bins, top_k, …) is frozen with each champion's baseline.
DECISION_FIELDS = ("alpha", "warn_psi", "alert_psi", "min_window", "mae_material_change")


class DriftThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float | None = Field(default=None, gt=0.0, lt=1.0)
    warn_psi: float | None = Field(default=None, ge=0.0)
    alert_psi: float | None = Field(default=None, ge=0.0)
    min_window: int | None = Field(default=None, ge=2)
    mae_material_change: float | None = Field(default=None, gt=0.0)


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
            raise InvalidInput(
                f"tenant settings: {'.'.join(map(str, first['loc']))}: {first['msg']}"
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
        """The baseline's frozen config with this tenant's current decision thresholds on top."""
        updates = {k: v for k, v in self.drift.model_dump().items() if v is not None and k in DECISION_FIELDS}
        try:
            return DriftConfig.model_validate({**frozen.model_dump(), **updates})
        except ValidationError as error:
            raise InvalidInput(f"drift thresholds: {error.errors()[0]['msg']}") from None
