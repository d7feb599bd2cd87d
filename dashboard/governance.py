"""Governance: versions and who moved them, the live retraining and its canary, and the decisions people take."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel

from dashboard.formatting import short_hash, when
from dashboard.state import with_orchestrator
from evolution.contracts import DAY_S, ApprovalDecision, ApprovalResponse, RetrainingStatus
from evolution.drift.baselines import BaselineOverride
from evolution.lifecycle import TransitionResult
from evolution.platform.orchestrator import decide_as
from evolution.platform.wiring import Services
from evolution.security import Principal
from evolution.stats.canary_models import GuardConfig
from evolution.timeutil import utcnow

# The canary runs on GuardConfig's defaults for these: the workflow fixes only tau, tau_harm and the winsorizing
# bounds from shadow data, and the live status carries the guard's decision but not its configuration.
_GUARD_DEFAULTS = GuardConfig.model_fields
SIGNIFICANCE: float = _GUARD_DEFAULTS["alpha"].default
PROMOTE_MIN_LABELS: int = _GUARD_DEFAULTS["min_promote_n"].default
ROLLBACK_MIN_LABELS: int = _GUARD_DEFAULTS["min_rollback_n"].default


def model_names(services: Services, principal: Principal, tenant_id: str) -> list[str]:
    return sorted({v.model_name for v in services.registry.list_versions(principal, tenant_id)})


def version_rows(services: Services, principal: Principal, tenant_id: str) -> list[dict[str, Any]]:
    """Every version with its state, and who last moved it and when (from the audit log)."""
    last_move: dict[str, Any] = {}
    for entry in services.registry.audit_trail(principal, tenant_id):
        if entry.subject_type == "model_version":
            last_move[entry.subject_id] = entry
    rows = []
    for v in services.registry.list_versions(principal, tenant_id):
        moved = last_move.get(v.id)
        rows.append(
            {
                "model": v.model_name,
                "version": v.number,
                "state": v.state.value,
                "moved by": f"{moved.actor} ({moved.role})" if moved else "",
                "when (UTC)": when(moved.at, seconds=True).removesuffix(" UTC") if moved else "",
                "holdout MAE": _rounded(v.metrics.get("holdout_mae")),
                "why": str(moved.details.get("reason", "")) if moved else "",
                "model hash": short_hash(v.model_hash),
            }
        )
    return rows


def _rounded(value: Any, digits: int = 4) -> float | None:
    return round(float(value), digits) if isinstance(value, int | float) else None


def version_hashes(services: Services, principal: Principal, tenant_id: str) -> list[str]:
    """'yield v2  <full model hash>' per version with a model: the table shows only their first characters."""
    return [
        f"{v.model_name} v{v.number}  {v.model_hash}"
        for v in services.registry.list_versions(principal, tenant_id)
        if v.model_hash
    ]


def breaker_warning(services: Services, principal: Principal, tenant_id: str) -> str | None:
    """Why retraining is disabled while the tenant's circuit breaker is open (and how to reset it); else None."""
    return services.breaker.status(principal, tenant_id).blocked_reason


def watch_rows(services: Services, principal: Principal, tenant_id: str) -> list[dict[str, Any]]:
    """Post-promotion watches, the newest first: what is watched against what, how far, and how each ended."""
    now = utcnow()
    return [
        {
            "model": w.model_name,
            "champion": f"v{w.champion_number}",
            "watched against": f"v{w.previous_number}",
            "status": w.status.replace("_", " "),
            "days": round((min(now, w.ended_at or now) - w.started_at).total_seconds() / DAY_S, 1),
            "of days": round((w.min_until - w.started_at).total_seconds() / DAY_S, 1),
            "labels": w.labels,
            "of labels": w.min_labels,
            "harm q (worse)": round(w.q_harm, 4),
            "why": w.reason,
        }
        for w in services.watches.progress(principal, tenant_id)
    ]


class FailedCandidate(BaseModel):
    model: str
    number: int
    at: str
    headline: str
    reason: str
    """The whole reason of its FAILED transition: a trainer's failure ends with the trainer's last output lines."""


def failed_candidates(
    services: Services, principal: Principal, tenant_id: str, limit: int = 5
) -> list[FailedCandidate]:
    """The latest candidates that ended FAILED, newest first, each with why (the table's "why" is cut short)."""
    failures: list[FailedCandidate] = []
    names = {v.id: (v.model_name, v.number) for v in services.registry.list_versions(principal, tenant_id)}
    for entry in reversed(services.registry.audit_trail(principal, tenant_id)):
        if entry.to_state != "FAILED" or entry.subject_id not in names:
            continue
        reason = str(entry.details.get("reason", ""))
        model, number = names[entry.subject_id]
        failures.append(
            FailedCandidate(
                model=model,
                number=number,
                at=when(entry.at, seconds=True),
                headline=(reason.splitlines() or [""])[0][:160],
                reason=reason,
            )
        )
        if len(failures) == limit:
            break
    return failures


def audit_rows(
    services: Services, principal: Principal, tenant_id: str, limit: int = 50
) -> list[dict[str, Any]]:
    return [
        {
            "seq": e.seq,
            "at (UTC)": when(e.at, seconds=True).removesuffix(" UTC"),
            "actor": e.actor,
            "role": e.role,
            "action": e.action,
            "change": f"{e.from_state or ''} → {e.to_state}" if e.to_state else "",
            "reason": str(e.details.get("reason", "")),
            "entry hash": short_hash(e.entry_hash),
        }
        for e in reversed(audit_entries(services, principal, tenant_id, limit))
    ]


def audit_entries(services: Services, principal: Principal, tenant_id: str, limit: int = 50) -> list[Any]:
    return services.registry.audit_trail(principal, tenant_id)[-limit:]


def audit_hashes(services: Services, principal: Principal, tenant_id: str, limit: int = 50) -> list[str]:
    return [
        f"#{e.seq}  {e.entry_hash}" for e in reversed(audit_entries(services, principal, tenant_id, limit))
    ]


def chain_status(services: Services, principal: Principal, tenant_id: str) -> tuple[bool, str]:
    report = services.registry.verify_audit(principal, tenant_id)
    if report.ok:
        return True, f"audit chain intact: {report.entries} entries, head {short_hash(report.head_hash)}"
    return False, "audit chain BROKEN: " + "; ".join(report.problems[:3])


class CanaryOutcome(BaseModel):
    """How a decided canary ended: its decision and the figures it was taken on, not a live counter."""

    decision: str
    labels: int
    p_value: float
    q_value: float
    mae_gain: float
    reason: str
    final_state: str | None

    @property
    def sentence(self) -> str:
        if self.labels == 0 and self.decision == "promote":
            return f"No canary comparison was needed: {self.reason}. Version state now: {self.final_state or 'unknown'}."
        verdict = {"promote": "promoted the candidate", "rollback": "rolled the candidate back"}.get(
            self.decision, f"ended with '{self.decision}'"
        )
        return (
            f"The canary {verdict} after {self.labels:,} labelled requests: always-valid p (better) = "
            f"{self.p_value:.3g}, q (worse) = {self.q_value:.3g}; the candidate's MAE was lower by "
            f"{self.mae_gain:.3f} per forecast. Version state now: {self.final_state or 'unknown'}."
        )


DECIDED_PHASES = ("awaiting_approval", "finished")


def canary_decided(status: RetrainingStatus) -> bool:
    guard = status.guard
    return guard is not None and (guard.action != "continue" or status.phase in DECIDED_PHASES)


def canary_outcome(status: RetrainingStatus) -> CanaryOutcome | None:
    """The canary's result once its test has decided (None while it runs, or without a canary)."""
    guard = status.guard
    if guard is None or not canary_decided(status):
        return None
    return CanaryOutcome(
        decision=guard.action,
        labels=guard.n,
        p_value=guard.p_promote,
        q_value=guard.q_rollback,
        mae_gain=guard.theta_hat,
        reason=guard.reason,
        final_state=status.state,
    )


class CanaryProgress(BaseModel):
    labels: int
    p_value: float
    q_value: float
    labels_to_promotion_test: int
    promotion_ready: bool
    rollback_armed: bool
    decision: str
    reason: str
    promote_rule: str
    rollback_rule: str


def canary_progress(status: RetrainingStatus) -> CanaryProgress | None:
    """How far the running sequential test is from a decision, in words a manager can act on (None once the
    test has decided: :func:`canary_outcome` says how it ended)."""
    guard = status.guard
    if guard is None or canary_decided(status):
        return None
    return CanaryProgress(
        labels=guard.n,
        p_value=guard.p_promote,
        q_value=guard.q_rollback,
        labels_to_promotion_test=max(0, PROMOTE_MIN_LABELS - guard.n),
        promotion_ready=guard.n >= PROMOTE_MIN_LABELS and guard.p_promote < SIGNIFICANCE,
        rollback_armed=guard.n >= ROLLBACK_MIN_LABELS,
        decision=guard.action,
        reason=guard.reason,
        promote_rule=f"Promote when < {SIGNIFICANCE:g} after {PROMOTE_MIN_LABELS:,} labels",
        rollback_rule=f"Roll back when < {SIGNIFICANCE:g} after {ROLLBACK_MIN_LABELS:,} labels",
    )


def live_status(tenant_id: str) -> RetrainingStatus | None:
    return with_orchestrator(lambda o: o.retraining_status(tenant_id))


def decide(
    services: Services, principal: Principal, tenant_id: str, decision: ApprovalDecision, reason: str
) -> ApprovalResponse:
    """Send the signed-in person's decision with a ticket the service layer signs for them (after checking their
    role); the workflow verifies the ticket and audits a refusal."""

    return with_orchestrator(
        lambda o: decide_as(principal, o, services.approval_tickets, tenant_id, decision, reason)
    )


def force_rollback(
    services: Services, principal: Principal, tenant_id: str, model_name: str, reason: str
) -> TransitionResult:
    return services.registry.force_rollback(
        principal, tenant_id, model_name, f"dashboard-rollback-{uuid.uuid4().hex}", reason
    )


def reset_baseline(
    services: Services, principal: Principal, tenant_id: str, model_name: str, reason: str
) -> BaselineOverride:
    return services.baselines.reset(principal, tenant_id, model_name, reason, services.keyring)
