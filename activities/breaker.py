"""Circuit breaker and blocked-start activities: check, record each run's outcome, audit and notify a block."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from activities.errors import domain_errors_are_final
from activities.heartbeat import heartbeats
from evolution.contracts import (
    BreakerCheckIn,
    BreakerCheckOut,
    BreakerRecordIn,
    BreakerRecordOut,
    RetrainingBlockIn,
    RetrainingBlockOut,
)
from evolution.notifications.port import NotificationIn, Notifier
from evolution.security import Principal

if TYPE_CHECKING:  # the services are injected: importing them here would load SQLAlchemy into the sandbox
    from evolution.registry.circuit_breaker import CircuitBreaker

BLOCKED_KIND = "retraining.blocked"
# A sub-kind of retraining.blocked: the notification guidance for blocked retraining applies (see notifications).
OPENED_KIND = "retraining.blocked.circuit_open"


class BreakerActivities:
    def __init__(self, breaker: CircuitBreaker, notifier: Notifier) -> None:
        self._breaker = breaker
        self._notifier = notifier

    @activity.defn(name="check_circuit_breaker")
    @domain_errors_are_final
    @heartbeats
    def check_circuit_breaker(self, inp: BreakerCheckIn) -> BreakerCheckOut:
        status = self._breaker.check(Principal.system(inp.tenant_id), inp.tenant_id)
        reason = status.blocked_reason
        return BreakerCheckOut(
            allowed=reason is None,
            reason=reason,
            state=status.state,
            consecutive_failures=status.consecutive_failures,
            threshold=status.threshold,
        )

    @activity.defn(name="record_breaker_outcome")
    @domain_errors_are_final
    @heartbeats
    def record_breaker_outcome(self, inp: BreakerRecordIn) -> BreakerRecordOut:
        recorded = self._breaker.record(
            Principal.system(inp.tenant_id), inp.tenant_id, inp.run_id, inp.outcome, inp.reason
        )
        status = recorded.status
        if recorded.opened_now:
            # A retry after a lost answer notifies again: at least once.
            self._notifier.notify(
                NotificationIn(
                    tenant_id=inp.tenant_id,
                    severity="critical",
                    kind=OPENED_KIND,
                    subject=(
                        f"Retraining disabled for {inp.tenant_id}: circuit breaker opened after "
                        f"{status.consecutive_failures} consecutive failed retrainings"
                    ),
                    body={
                        "model_name": inp.model_name,
                        "consecutive_failures": status.consecutive_failures,
                        "threshold": status.threshold,
                        "last_outcome": inp.outcome,
                        "last_failure_reason": status.last_failure_reason,
                        "reset": f"evolution tenant breaker reset {inp.tenant_id} --reason ...",
                    },
                )
            )
        return BreakerRecordOut(
            state=status.state,
            consecutive_failures=status.consecutive_failures,
            threshold=status.threshold,
            effect=recorded.effect,
            opened_now=recorded.opened_now,
        )

    @activity.defn(name="record_retraining_block")
    @domain_errors_are_final
    @heartbeats
    def record_retraining_block(self, inp: RetrainingBlockIn) -> RetrainingBlockOut:
        recorded = self._breaker.record_blocked(
            Principal.system(inp.tenant_id),
            inp.tenant_id,
            inp.model_name,
            inp.code,
            inp.reason,
            inp.request_id,
        )
        self._notifier.notify(
            NotificationIn(
                tenant_id=inp.tenant_id,
                severity="warning",
                kind=BLOCKED_KIND,
                subject=f"Retraining of {inp.model_name} blocked: {inp.reason}",
                body={"model_name": inp.model_name, "code": inp.code, "reason": inp.reason},
            )
        )
        return RetrainingBlockOut(recorded=recorded)
