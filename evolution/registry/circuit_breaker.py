"""The retraining circuit breaker: consecutive technical failures disable a tenant's retraining until an admin resets it.

Each finished retraining reports its outcome here (the workflow, through an activity). What counts:

* **failures** (the streak grows): ``failed`` (the trainer crashed, exited non-zero, timed out or ran out of
  memory; its output broke the training contract or its model does not load, does not fit the features or
  predicts NaN; an activity or infrastructure error), ``quarantined`` (a signature or digest did not verify).
  Something in the machinery, the trainer or the data is broken, and retrying on a schedule would only burn quota
  and page people.
* **business outcomes** (the streak resets to 0): ``promoted``, ``rejected`` (a manager's decision),
  ``validation_failed`` (a sound model that merely lost to the champion on the held-out rows: the trainer worked,
  its model was not better), ``no_significant_difference``, ``rolled_back`` (the canary caught a harmful candidate:
  the safety net worked), ``approval_timeout`` (nobody decided in time). The pipeline itself worked end to end.
* **not a run** (nothing changes): ``blocked`` (quota exhausted, or the breaker itself open).

After :data:`DEFAULT_FAILURE_THRESHOLD` consecutive failures (or the tenant's ``circuit_breaker_threshold``) the
breaker opens: the opening is audited, and while it is open every retraining start ends at once with the reason
:data:`CIRCUIT_OPEN`. Outcomes recorded while it is open change nothing; only an admin's reset (audited, with a
reason) closes it. The state is a row per tenant in ``circuit_breakers`` (migration 0005), so it survives restarts.

Recording is idempotent by run id (an activity retry of the same run counts once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from evolution.errors import InvalidInput, NotFound
from evolution.observability import metrics
from evolution.registry.audit import append_audit, lock_tenant_chain
from evolution.registry.db import reading, transaction
from evolution.registry.schema import AuditEntry, CircuitBreakerState, Tenant
from evolution.registry.tenant_settings import TenantSettings
from evolution.security import Action, Principal, authorize
from evolution.timeutil import as_utc, utcnow

log = logging.getLogger(__name__)

CIRCUIT_OPEN = "CIRCUIT_OPEN"
DEFAULT_FAILURE_THRESHOLD = 3

State = Literal["closed", "open"]
Effect = Literal["failure", "success", "ignored"]

FAILURE_OUTCOMES = frozenset({"failed", "quarantined"})
BUSINESS_OUTCOMES = frozenset(
    {
        "promoted",
        "rejected",
        "validation_failed",
        "no_significant_difference",
        "rolled_back",
        "approval_timeout",
    }
)
NOT_A_RUN_OUTCOMES = frozenset({"blocked"})

_REASON_MAX = 500
BLOCKED_ACTION = "retraining.blocked"


def effect_of(outcome: str) -> Effect:
    """What a retraining outcome does to the streak (an unknown outcome is refused, never guessed)."""
    if outcome in FAILURE_OUTCOMES:
        return "failure"
    if outcome in BUSINESS_OUTCOMES:
        return "success"
    if outcome in NOT_A_RUN_OUTCOMES:
        return "ignored"
    raise InvalidInput(f"retraining outcome {outcome!r} is unknown to the circuit breaker")


class Streak(BaseModel):
    """The part of the breaker's state the pure rule works on."""

    model_config = ConfigDict(frozen=True)

    state: State = "closed"
    consecutive_failures: int = 0


def advance(streak: Streak, outcome: str, threshold: int) -> Streak:
    """The streak after one more outcome. Open stays open (only a reset closes it)."""
    if threshold < 1:
        raise InvalidInput(f"circuit breaker threshold {threshold}: must be at least 1")
    effect = effect_of(outcome)
    if streak.state == "open" or effect == "ignored":
        return streak
    if effect == "success":
        return Streak(state="closed", consecutive_failures=0)
    failures = streak.consecutive_failures + 1
    return Streak(state="open" if failures >= threshold else "closed", consecutive_failures=failures)


def threshold_for(settings: TenantSettings) -> int:
    return settings.circuit_breaker_threshold or DEFAULT_FAILURE_THRESHOLD


class BreakerStatus(BaseModel):
    tenant_id: str
    state: State
    consecutive_failures: int
    threshold: int
    opened_at: datetime | None = None
    last_outcome: str | None = None
    last_failure_reason: str | None = None
    updated_at: datetime | None = None

    @property
    def blocked_reason(self) -> str | None:
        if self.state != "open":
            return None
        since = self.opened_at.isoformat(timespec="seconds") if self.opened_at else "?"
        last = f"; last: {self.last_failure_reason}" if self.last_failure_reason else ""
        return (
            f"{CIRCUIT_OPEN}: retraining disabled since {since} after {self.consecutive_failures} consecutive "
            f"failed retrainings{last}. An admin must reset it "
            f"(evolution tenant breaker reset {self.tenant_id} --reason ...)"
        )


class RecordedOutcome(BaseModel):
    status: BreakerStatus
    effect: Effect
    opened_now: bool = False


def _clip(text: str) -> str:
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"


class CircuitBreaker:
    def __init__(self, factory: sessionmaker[Session], clock: Callable[[], datetime] = utcnow) -> None:
        self._factory = factory
        self._clock = clock

    # ----------------------------------------------------------------- reads
    def status(self, principal: Principal, tenant_id: str) -> BreakerStatus:
        authorize(principal, Action.VIEW, tenant_id)
        with reading(self._factory, tenant_id) as session:
            tenant = self._tenant(session, tenant_id)
            return self._status(tenant, session.get(CircuitBreakerState, tenant_id))

    def check(self, principal: Principal, tenant_id: str) -> BreakerStatus:
        """The status; ``blocked_reason`` is set (CIRCUIT_OPEN) while retraining is disabled."""
        return self.status(principal, tenant_id)

    # ----------------------------------------------------------------- writes
    def record(
        self, principal: Principal, tenant_id: str, run_id: str, outcome: str, reason: str = ""
    ) -> RecordedOutcome:
        """Record one finished retraining (idempotent by ``run_id``); audit the opening if this run opens it."""
        authorize(principal, Action.RECORD_USAGE, tenant_id)
        if not run_id or len(run_id) > 100:
            raise InvalidInput("run_id: required, at most 100 characters")
        effect = effect_of(outcome)
        with transaction(self._factory, tenant_id) as session:
            tenant = self._tenant(session, tenant_id)
            lock_tenant_chain(session, tenant_id)
            row = session.get(CircuitBreakerState, tenant_id)
            if row is not None and row.last_run_id == run_id:  # a retried report of the same run
                opened_now = row.state == "open" and row.opened_by_run == run_id
                return RecordedOutcome(status=self._status(tenant, row), effect=effect, opened_now=opened_now)
            now = self._clock()
            if row is None:
                row = CircuitBreakerState(
                    tenant_id=tenant_id, state="closed", consecutive_failures=0, updated_at=now
                )
                session.add(row)
            threshold = threshold_for(TenantSettings.parse(tenant.config))
            before = Streak(state=row.state, consecutive_failures=row.consecutive_failures)  # type: ignore[arg-type]
            after = advance(before, outcome, threshold)
            row.state = after.state
            row.consecutive_failures = after.consecutive_failures
            row.last_run_id = run_id
            row.last_outcome = outcome
            if effect == "failure" and before.state == "closed":
                row.last_failure_reason = _clip(reason or outcome)
            row.updated_at = now
            opened_now = before.state == "closed" and after.state == "open"
            if opened_now:
                row.opened_at = now
                row.opened_by_run = run_id
                session.flush()
                append_audit(
                    session,
                    tenant_id=tenant_id,
                    principal=principal,
                    action="breaker.opened",
                    subject_type="circuit_breaker",
                    subject_id=tenant_id,
                    at=now,
                    request_id=run_id,
                    details={
                        "consecutive_failures": after.consecutive_failures,
                        "threshold": threshold,
                        "last_outcome": outcome,
                        "last_failure_reason": row.last_failure_reason,
                    },
                )
                log.warning(
                    "circuit breaker opened after %d consecutive failed retrainings",
                    after.consecutive_failures,
                    extra={"tenantId": tenant_id},
                )
            session.flush()
            return RecordedOutcome(status=self._status(tenant, row), effect=effect, opened_now=opened_now)

    def reset(self, principal: Principal, tenant_id: str, reason: str) -> BreakerStatus:
        """Admin: close the breaker and clear the streak (audited with the state before and the reason)."""
        authorize(principal, Action.MANAGE_TENANT, tenant_id)
        reason = reason.strip()
        if not reason:
            raise InvalidInput("reset reason: required (it is recorded in the audit log)")
        if len(reason) > _REASON_MAX:
            raise InvalidInput(f"reset reason: at most {_REASON_MAX} characters")
        with transaction(self._factory, tenant_id) as session:
            tenant = self._tenant(session, tenant_id)
            lock_tenant_chain(session, tenant_id)
            row = session.get(CircuitBreakerState, tenant_id)
            before = self._status(tenant, row)
            now = self._clock()
            if row is None:
                row = CircuitBreakerState(
                    tenant_id=tenant_id, state="closed", consecutive_failures=0, updated_at=now
                )
                session.add(row)
            row.state = "closed"
            row.consecutive_failures = 0
            row.opened_at = None
            row.opened_by_run = None
            row.updated_at = now
            session.flush()
            append_audit(
                session,
                tenant_id=tenant_id,
                principal=principal,
                action="breaker.reset",
                subject_type="circuit_breaker",
                subject_id=tenant_id,
                at=now,
                details={
                    "reason": reason,
                    "before": {
                        "state": before.state,
                        "consecutive_failures": before.consecutive_failures,
                        "opened_at": before.opened_at.isoformat() if before.opened_at else None,
                        "last_failure_reason": before.last_failure_reason,
                    },
                    "after": {"state": "closed", "consecutive_failures": 0},
                },
            )
            return self._status(tenant, row)

    def record_blocked(
        self,
        principal: Principal,
        tenant_id: str,
        model_name: str,
        code: str,
        reason: str,
        request_id: str,
    ) -> bool:
        """Audit a retraining that did not run (BLOCK_RETRAINING or CIRCUIT_OPEN); once per ``request_id``.

        Returns True when this call wrote the audit row (False: a retry of one already recorded).
        """
        authorize(principal, Action.RECORD_USAGE, tenant_id)
        if not request_id or len(request_id) > 100:
            raise InvalidInput("request_id: required, at most 100 characters")
        if not code or len(code) > 40:
            raise InvalidInput(f"block code {code!r}: 1-40 characters")
        with transaction(self._factory, tenant_id) as session:
            self._tenant(session, tenant_id)
            lock_tenant_chain(session, tenant_id)
            seen = session.scalar(
                select(AuditEntry.id).where(
                    AuditEntry.tenant_id == tenant_id,
                    AuditEntry.request_id == request_id,
                    AuditEntry.action == BLOCKED_ACTION,
                )
            )
            if seen is not None:
                return False
            append_audit(
                session,
                tenant_id=tenant_id,
                principal=principal,
                action=BLOCKED_ACTION,
                subject_type="retraining",
                subject_id=model_name[:100],
                at=self._clock(),
                request_id=request_id,
                details={"code": code, "reason": _clip(reason), "model_name": model_name},
            )
            return True

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _tenant(session: Session, tenant_id: str) -> Tenant:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound(f"tenant {tenant_id!r} does not exist")
        return tenant

    @staticmethod
    def _status(tenant: Tenant, row: CircuitBreakerState | None) -> BreakerStatus:
        threshold = threshold_for(TenantSettings.parse(tenant.config))
        # Every read and write passes here: the gauge follows the state the process last saw.
        metrics.CIRCUIT_BREAKER_OPEN.labels(tenant.id).set(
            1 if row is not None and row.state == "open" else 0
        )
        if row is None:
            return BreakerStatus(
                tenant_id=tenant.id, state="closed", consecutive_failures=0, threshold=threshold
            )
        return BreakerStatus(
            tenant_id=tenant.id,
            state=row.state,  # type: ignore[arg-type]
            consecutive_failures=row.consecutive_failures,
            threshold=threshold,
            opened_at=as_utc(row.opened_at) if row.opened_at else None,
            last_outcome=row.last_outcome,
            last_failure_reason=row.last_failure_reason,
            updated_at=as_utc(row.updated_at) if row.updated_at else None,
        )
