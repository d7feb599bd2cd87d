"""The pydantic models that cross the workflow boundary (workflow, activity, update and query payloads).

At the top of evolution/ because the workflows import it inside Temporal's sandbox: it imports only the lifecycle
and the canary's pydantic models, never SQLAlchemy, numpy, the registry or metrics (a test checks).

They hold only identifiers, small numbers and short texts: no secrets, no data rows, nothing large.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from evolution.lifecycle import TransitionResult, VersionView
from evolution.stats.canary_models import Decision, GuardConfig, GuardState

Outcome = Literal[
    "promoted",
    "rolled_back",
    "rejected",
    "no_significant_difference",
    "failed",
    "quarantined",
    "blocked",
    "approval_timeout",
    "validation_failed",
]


class PrincipalRef(BaseModel):
    """A principal as it travels through a workflow (identity only; authority is re-checked by the service)."""

    user: str
    role: str
    tenant_id: str


DAY_S = 86_400.0


class WatchPolicy(BaseModel):
    """How long a promoted champion is watched: until both the period and the labels are reached, at most max_s."""

    enabled: bool = Field(default=True, description="start a watch after every promotion that had a canary")
    min_s: float = Field(default=14 * DAY_S, gt=0, description="the shortest watch")
    min_labels: int = Field(default=5_000, ge=0, description="labelled requests the watch waits for at least")
    max_s: float = Field(
        default=60 * DAY_S,
        gt=0,
        description="the longest watch: it ends 'expired' here if the labels never came (a notification says so)",
    )
    look_interval_s: float = Field(default=600.0, gt=0, description="how often the harm test looks")


class RolloutTiming(BaseModel):
    look_interval_s: float = Field(default=60.0, gt=0)
    training_timeout_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="SLO: a training over this is cancelled (its job killed) and alerts.",
    )
    shadow_min_pairs: int = Field(default=300, ge=10)
    shadow_max_s: float = Field(default=6 * 3600.0, gt=0)
    rollout_window_s: float = Field(default=3600.0, gt=0, description="SLO: a canary over this rolls back.")
    approval_timeout_s: float = Field(default=24 * 3600.0, gt=0)
    canary_share: float = Field(default=0.1, gt=0, lt=1)
    step_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="How long a step whose worker died is waited for before it is retried elsewhere: caps the "
        "start-to-close timeout of the short steps and every step's heartbeat timeout. None: the policies' "
        "defaults (workflows/policies.py: heartbeats within 30 s, start-to-close 60 s and more).",
    )
    watch: WatchPolicy = Field(
        default_factory=WatchPolicy, description="the post-promotion watch a promotion after a canary starts"
    )


class RetrainingInput(BaseModel):
    tenant_id: str
    model_name: str
    trigger: Literal["drift", "manual", "bootstrap"] = "manual"
    reason: str = ""
    drift_report_id: str | None = None
    snapshot_id: str | None = Field(
        default=None,
        description="The window whose drift started this run: held for data quality, the run waits for an admin.",
    )
    seed: int = 42
    timing: RolloutTiming = Field(default_factory=RolloutTiming)
    requested_by: PrincipalRef | None = None


class RetrainingStatus(BaseModel):
    phase: str = "starting"
    version_id: str | None = None
    version_number: int | None = None
    state: str | None = None
    awaiting_approval: bool = False
    guard: Decision | None = None
    shadow_pairs: int = 0
    shadow_pairs_needed: int = Field(
        default=0,
        description="Labelled shadow pairs the candidate needs before its canary (0: not in shadow yet).",
    )
    message: str = ""
    workflow_id: str | None = Field(
        default=None, description="What an approval ticket must name, with run_id."
    )
    run_id: str | None = None
    model_name: str | None = None
    refused_approvals: int = Field(
        default=0, description="Approvals and rejections refused by the ticket checks."
    )
    last_refusal: str | None = None
    held_windows: list[str] = Field(
        default_factory=list,
        description="Snapshots held for data quality this run waits on (evolution snapshot accept lets it go on).",
    )


BlockCode = Literal["BLOCK_RETRAINING", "CIRCUIT_OPEN", "DATA_QUALITY_HOLD"]


class HoldCheckIn(BaseModel):
    tenant_id: str
    snapshot_id: str = Field(description="The window whose drift started the retraining.")


class HoldCheckOut(BaseModel):
    held: list[str] = Field(
        default_factory=list,
        description="Held windows among it and the latest one (what training would read).",
    )
    reason: str = ""


class RetrainingResult(BaseModel):
    tenant_id: str
    model_name: str
    version_id: str | None
    final_state: str | None
    outcome: Outcome
    reason: str
    guard: Decision | None = None
    blocked_by: BlockCode | None = Field(
        default=None,
        description="Outcome 'blocked': quota/budget (BLOCK_RETRAINING), the circuit breaker, or a window held for "
        "data quality that no admin accepted in time (DATA_QUALITY_HOLD).",
    )


ApprovalDecision = Literal["approve", "reject"]
TICKET_FORMAT: Literal["evolution-approval/1"] = "evolution-approval/1"


class TicketClaims(BaseModel):
    """What an approval ticket says: who decided what, for which run and candidate, until when (what is signed)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["evolution-approval/1"] = TICKET_FORMAT
    tenant_id: str = Field(min_length=1, max_length=63)
    model_name: str = Field(min_length=1, max_length=100)
    workflow_id: str = Field(min_length=1, max_length=200)
    run_id: str = Field(min_length=1, max_length=100)
    candidate_version_id: str = Field(min_length=1, max_length=100)
    decision: ApprovalDecision
    user: str = Field(min_length=1, max_length=200)
    role: str = Field(min_length=1, max_length=20)
    reason: str = Field(default="", max_length=2000)
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    issued_at: datetime
    expires_at: datetime


class TicketSignature(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algorithm: str = Field(max_length=40)
    key_id: str = Field(max_length=200)
    value: str = Field(max_length=2000)
    key_ref: str | None = Field(default=None, max_length=2048)
    prehash: str | None = Field(default=None, max_length=20)


class ApprovalTicket(BaseModel):
    """Issued by the service layer after it authenticated the person and checked the permission table; signed by the
    system's signer over the canonical JSON of its claims. The workflow trusts nothing else."""

    model_config = ConfigDict(extra="forbid")

    claims: TicketClaims
    signature: TicketSignature


class ApprovalRequest(BaseModel):
    """What the ``approval`` update and the ``approve``/``reject`` signals carry: a ticket.

    Lenient on purpose: whatever arrives (a claimed role, a malformed or forged ticket) is accepted as input so that
    its refusal can be audited with what it claimed; only a ticket that verifies decides anything. The fields beside
    ``ticket`` are the claims of callers from before tickets existed (``decision``, ``user``, ``role``,
    ``tenant_id``): recorded, never trusted.
    """

    model_config = ConfigDict(extra="allow")

    ticket: dict[str, Any] | None = None
    decision: str | None = None
    user: str | None = None
    role: str | None = None
    tenant_id: str | None = None
    reason: str = ""

    @classmethod
    def of(cls, ticket: ApprovalTicket) -> ApprovalRequest:
        return cls(ticket=ticket.model_dump(mode="json"))


class ApprovalResponse(BaseModel):
    accepted: bool
    decision: str
    final_state: str | None
    message: str


# ------------------------------------------------------------------ activities
class QuotaCheckIn(BaseModel):
    tenant_id: str


class QuotaCheckOut(BaseModel):
    allowed: bool
    reason: str | None
    gpu_hours_used: float
    cost_usd: float


class BreakerCheckIn(BaseModel):
    tenant_id: str


class BreakerCheckOut(BaseModel):
    allowed: bool
    reason: str | None
    state: Literal["closed", "open"]
    consecutive_failures: int
    threshold: int


class BreakerRecordIn(BaseModel):
    tenant_id: str
    model_name: str
    run_id: str = Field(min_length=1, max_length=100)
    outcome: Outcome
    reason: str = ""


class BreakerRecordOut(BaseModel):
    state: Literal["closed", "open"]
    consecutive_failures: int
    threshold: int
    effect: Literal["failure", "success", "ignored"]
    opened_now: bool


class RetrainingBlockIn(BaseModel):
    """A retraining that did not run: audited once per request id, and notified."""

    tenant_id: str
    model_name: str
    code: BlockCode
    reason: str
    request_id: str = Field(min_length=1, max_length=100)


class RetrainingBlockOut(BaseModel):
    recorded: bool


class RegisterCandidateIn(BaseModel):
    tenant_id: str
    model_name: str
    request_id: str
    reason: str


class CurrentVersionIn(BaseModel):
    tenant_id: str
    model_name: str
    state: str


class CurrentVersionOut(BaseModel):
    version: VersionView | None


class TransitionIn(BaseModel):
    tenant_id: str
    version_id: str
    to_state: str
    expected_version: int
    request_id: str
    reason: str = ""
    changes: dict[str, Any] | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class TicketCheckIn(BaseModel):
    """An approval that arrived (by the update or a signal), with what it must name to count."""

    channel: Literal["update", "approve", "reject"]
    request: ApprovalRequest
    tenant_id: str
    model_name: str
    workflow_id: str
    run_id: str
    candidate_version_id: str | None
    waiting: bool = Field(description="Whether the candidate waits for a decision now.")
    used_nonces: list[str] = Field(default_factory=list)


class TicketCheckOut(BaseModel):
    accepted: bool
    reason: str
    decision: ApprovalDecision | None = None
    approver: PrincipalRef | None = None
    nonce: str | None = None
    note: str = Field(default="", description="The person's reason for the decision, from the ticket.")


class ReconcileIn(BaseModel):
    tenant_id: str
    except_run: str | None = Field(default=None, description="The caller's own run: never stranded.")


class ReconcileOut(BaseModel):
    failed: list[str] = Field(default_factory=list, description="Versions failed: their run ended undecided.")


class PromoteIn(BaseModel):
    version_id: str
    expected_version: int
    request_id: str
    approver: PrincipalRef
    reason: str = ""


class QuarantineIn(BaseModel):
    tenant_id: str
    version_id: str
    request_id: str
    reason: str


class TransitionOut(BaseModel):
    result: TransitionResult


class TrainIn(BaseModel):
    tenant_id: str
    model_name: str
    version_id: str
    seed: int
    run_id: str


class TrainOut(BaseModel):
    snapshot_id: str
    model_hash: str
    signed_manifest: dict[str, Any]
    metrics: dict[str, Any]
    duration_s: float


class ValidateIn(BaseModel):
    tenant_id: str
    model_name: str
    candidate_version_id: str
    signed_manifest: dict[str, Any]
    model_hash: str


class ValidateOut(BaseModel):
    passed: bool
    reason: str
    candidate_mae: float | None
    champion_mae: float | None
    n: int


class PairsIn(BaseModel):
    tenant_id: str
    model_name: str = ""
    candidate_version_id: str
    cursor: int = 0
    min_pairs: int = 300


class ShadowOut(BaseModel):
    pairs: int
    cursor: int
    guard_config: GuardConfig | None


class LookIn(BaseModel):
    tenant_id: str
    model_name: str = ""
    candidate_version_id: str
    cursor: int
    config: GuardConfig
    state: GuardState
    elapsed_s: float
    window_s: float


class LookOut(BaseModel):
    cursor: int
    state: GuardState
    decision: Decision


class OutcomeRecorded(BaseModel):
    recorded: bool


class NotifyIn(BaseModel):
    tenant_id: str
    severity: Literal["info", "warning", "alert", "critical"]
    kind: str
    subject: str
    body: dict[str, Any] = Field(default_factory=dict)


class NotifyOut(BaseModel):
    delivered: bool


class DriftScanInput(BaseModel):
    tenant_id: str
    model_name: str
    min_window_rows: int = 50
    auto_retrain: bool = True
    retraining_timing: RolloutTiming = Field(default_factory=RolloutTiming)
    step_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Caps the seal and scan steps' timeouts, as RolloutTiming.step_timeout_s.",
    )


class SealIn(BaseModel):
    tenant_id: str
    min_rows: int
    window_end: datetime | None = Field(
        default=None,
        description="Fixed by the workflow, so that a retried seal finds the window its first attempt sealed "
        "instead of sealing the next (empty) one. None: now.",
    )


class SealOut(BaseModel):
    snapshot_id: str | None
    rows: int
    message: str


class ScanIn(BaseModel):
    tenant_id: str
    model_name: str
    snapshot_id: str


class ScanOut(BaseModel):
    report_id: str | None
    level: str
    alerts: list[str] = Field(default_factory=list)
    quality_alerts: list[str] = Field(
        default_factory=list,
        description="'feature: check' of each data-quality check that fired (its window is then held)",
    )
    message: str = ""


class SealScanIn(BaseModel):
    """Seal the window and scan it in one step (one activity: the scan reuses the rows the seal just read)."""

    tenant_id: str
    model_name: str
    min_rows: int
    window_end: datetime = Field(
        description="Fixed by the workflow: a retried step finds the window its first attempt sealed."
    )


class SealScanOut(BaseModel):
    sealed: SealOut
    scan: ScanOut | None = Field(default=None, description="None when nothing was sealed (too few events).")


class DriftScanResult(BaseModel):
    tenant_id: str
    snapshot_id: str | None
    report_id: str | None
    level: str
    retraining: Literal["started", "already_running", "not_needed", "disabled", "circuit_open"] = "not_needed"
    quality_alerts: list[str] = Field(
        default_factory=list,
        description="data-quality checks that fired: they alone never start a retraining",
    )
    message: str = ""


class GcInput(BaseModel):
    """One retention and garbage collection of a tenant's model artifacts (scheduled daily as ``gc/{tenant}``)."""

    tenant_id: str
    model_name: str | None = Field(default=None, description="None: every model of the tenant")
    dry_run: bool = Field(
        default=False, description="Plan only: report what would be deleted, delete nothing."
    )


class GcResult(BaseModel):
    """What a collection did: counts and version ids only (the digests are in the ``gc.collected`` audit rows)."""

    tenant_id: str
    dry_run: bool
    deferred: str | None = Field(default=None, description="why nothing was collected this time, if so")
    versions_kept: int = 0
    bytes_kept: int = 0
    collected: list[str] = Field(
        default_factory=list, description="ids of the versions collected (in a dry run: that would be)"
    )
    artifacts_deleted: int = 0
    bytes_deleted: int = 0
    left_alone: list[str] = Field(default_factory=list, description="planned, but changed before collection")
    errors: list[str] = Field(default_factory=list)


class EscalationsIn(BaseModel):
    """One pass of the notification escalation policy over every tenant's outbox (scheduled every few minutes),
    which also delivers the outbox's waiting OpenLineage events."""

    tenants: list[str] | None = Field(default=None, description="None: every tenant")


class EscalationsOut(BaseModel):
    escalated: int = 0
    failed_channels: int = 0
    lineage_delivered: int = Field(default=0, description="OpenLineage events the same pass delivered")
    lineage_pending: int = Field(default=0, description="OpenLineage events still waiting in the outbox")
