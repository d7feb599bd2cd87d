"""Serialisable models of the canary guard: configuration, state between looks, and a look's decision.

Kept free of numpy and scipy so that workflows (which must not import numpy) can carry them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Action = Literal["continue", "promote", "rollback", "no_significant_difference"]


class GuardConfig(BaseModel):
    """Fixed before the canary starts (tau from shadow or baseline data, never from live data)."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    min_promote_n: int = Field(1000, ge=2)
    min_rollback_n: int = Field(200, ge=2)
    n_max: int = Field(20_000, ge=2)
    tau: float = Field(gt=0.0, description="promotion mixture scale, MAE units")
    tau_harm: float = Field(gt=0.0, description="harm mixture scale (larger than tau), MAE units")
    paired: bool = True
    winsor_low: float | None = Field(
        None, description="clip d (paired) or each abs error (unpaired) below this"
    )
    winsor_high: float | None = Field(
        None, description="clip d (paired) or each abs error (unpaired) above this"
    )
    max_invalid_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="share of invalid/NaN predictions tolerated"
    )
    max_error_rate: float = Field(0.01, ge=0.0, le=1.0, description="share of failed requests tolerated")
    max_latency_ms: float | None = Field(None, gt=0.0, description="p99 latency ceiling of the candidate")

    @model_validator(mode="after")
    def _consistent(self) -> GuardConfig:
        if (
            self.winsor_low is not None
            and self.winsor_high is not None
            and self.winsor_low > self.winsor_high
        ):
            raise ValueError(f"winsor_low ({self.winsor_low}) is above winsor_high ({self.winsor_high})")
        return self


class MomentState(BaseModel):
    """Running count, mean and sum of squared deviations (merged with Chan's formula)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0


class GuardState(BaseModel):
    """Everything the guard remembers between looks; small and JSON-serialisable."""

    d: MomentState = Field(default_factory=MomentState, description="paired differences a - b")
    a: MomentState = Field(default_factory=MomentState, description="unpaired: champion absolute errors")
    b: MomentState = Field(default_factory=MomentState, description="unpaired: candidate absolute errors")
    p_promote: float = Field(1.0, description="running-minimum always-valid p of 'candidate better'")
    q_rollback: float = Field(1.0, description="running-minimum always-valid p of 'candidate worse'")
    looks: int = 0
    decided: Action | None = None
    decided_reason: str | None = None


class Decision(BaseModel):
    action: Action
    reason: str
    n: int = Field(description="matured labels (per arm when unpaired); requests for a guardrail decision")
    p_promote: float = 1.0
    q_rollback: float = 1.0
    theta_hat: float = Field(0.0, description="mean(a - b): champion MAE minus candidate MAE; > 0 is better")
    state: GuardState | None = Field(None, description="the state after this look: carry it forward")
