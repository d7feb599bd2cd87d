"""What the post-promotion watch carries between its steps: the policy, each step's input and output, its progress.

Plain pydantic (no numpy, no database) so that the watch workflow can carry them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from evolution.contracts import DAY_S, WatchPolicy

WatchStatus = Literal["watching", "kept", "rolled_back", "superseded", "expired"]
Verdict = Literal["continue", "harm", "kept", "superseded", "expired"]


def watch_workflow_id(tenant_id: str, model_name: str) -> str:
    return f"watch/{tenant_id}/{model_name}"


class WatchInput(BaseModel):
    """Names only: the harm test's configuration, state and cursor live in the watch's row, so that a watch started
    by hand through the Temporal client cannot bring a test of its own making."""

    tenant_id: str
    model_name: str
    champion_version_id: str = Field(description="the promoted version under watch")
    previous_version_id: str = Field(description="the champion it replaced, which shadow-scores meanwhile")
    policy: WatchPolicy = Field(default_factory=WatchPolicy)
    watch_id: str | None = Field(default=None, description="set when the workflow continued as new")


class StrandedWatchesIn(BaseModel):
    tenant_id: str


class StrandedWatchesOut(BaseModel):
    resume: list[WatchInput] = Field(description="watches whose workflow ended from outside, to start again")


class WatchStartIn(BaseModel):
    tenant_id: str
    model_name: str
    champion_version_id: str
    previous_version_id: str
    workflow_id: str
    policy: WatchPolicy


class WatchStartOut(BaseModel):
    watch_id: str


class WatchStepIn(BaseModel):
    tenant_id: str
    watch_id: str


class WatchLookOut(BaseModel):
    verdict: Verdict
    reason: str
    labels: int
    q_harm: float


class WatchEndIn(BaseModel):
    tenant_id: str
    watch_id: str
    request_id: str


class WatchEndOut(BaseModel):
    status: WatchStatus
    message: str
    labels: int
    q_harm: float


class WatchResult(BaseModel):
    tenant_id: str
    model_name: str
    watch_id: str
    status: WatchStatus
    reason: str
    labels: int
    q_harm: float


class WatchProgress(BaseModel):
    """A watch as `evolution status` and the Governance page show it."""

    watch_id: str
    model_name: str
    status: WatchStatus
    champion_version_id: str
    champion_number: int
    previous_version_id: str
    previous_number: int
    started_at: datetime
    min_until: datetime
    max_until: datetime
    labels: int
    min_labels: int
    q_harm: float
    theta_hat: float
    last_look_at: datetime | None
    ended_at: datetime | None
    reason: str

    def summary(self, now: datetime) -> str:
        """One line: where the watch stands."""
        head = f"v{self.champion_number} watched against v{self.previous_number}"
        if self.status != "watching":
            return f"{head}: {self.status.replace('_', ' ')} ({self.reason})"
        days = (now - self.started_at).total_seconds() / DAY_S
        period = (self.min_until - self.started_at).total_seconds() / DAY_S
        return (
            f"{head}: {days:.1f}/{period:g} days, {self.labels:,}/{self.min_labels:,} labels, "
            f"harm q = {self.q_harm:.3g}"
        )
