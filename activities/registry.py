"""Registry, quota and notification activities."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from activities.errors import domain_errors_are_final
from activities.heartbeat import heartbeats
from evolution.contracts import (
    CurrentVersionIn,
    CurrentVersionOut,
    NotifyIn,
    NotifyOut,
    OutcomeRecorded,
    PrincipalRef,
    PromoteIn,
    QuarantineIn,
    QuotaCheckIn,
    QuotaCheckOut,
    RegisterCandidateIn,
    RetrainingResult,
    TransitionIn,
    TransitionOut,
)
from evolution.lifecycle import ModelState, TransitionRequest, VersionChanges, VersionView
from evolution.notifications.port import NotificationIn, Notifier, notify_as
from evolution.observability.metrics import record_retraining_outcome
from evolution.security import Principal, Role

if TYPE_CHECKING:  # the services are injected: importing them here would load SQLAlchemy into the sandbox
    from evolution.registry.quota import QuotaManager
    from evolution.registry.versions import ModelRegistryService
    from evolution.training.loader import ModelLoader


def principal_of(ref: PrincipalRef) -> Principal:
    return Principal.for_tenant(ref.user, Role(ref.role), ref.tenant_id)


# Entering these states puts a model in front of traffic: its artifact is re-verified first (a tampered one is
# refused with IntegrityViolation, and the workflow quarantines it).
VERIFIED_ON_ENTRY = frozenset({ModelState.CANARY})


class RegistryActivities:
    def __init__(
        self,
        registry: ModelRegistryService,
        quota: QuotaManager,
        notifier: Notifier,
        verifier: ModelLoader | None = None,
    ) -> None:
        self._registry = registry
        self._quota = quota
        self._notifier = notifier
        self._verifier = verifier

    def _verify_artifact(self, tenant_id: str, version_id: str) -> None:
        if self._verifier is not None:
            self._verifier.verify(self._registry.get_version(Principal.system(tenant_id), version_id))

    @activity.defn(name="check_quota")
    @domain_errors_are_final
    @heartbeats
    def check_quota(self, inp: QuotaCheckIn) -> QuotaCheckOut:
        status = self._quota.status(Principal.system(inp.tenant_id), inp.tenant_id)
        reason = status.blocked_reason
        return QuotaCheckOut(
            allowed=reason is None,
            reason=reason,
            gpu_hours_used=status.gpu_hours_used,
            cost_usd=status.cost_usd,
        )

    @activity.defn(name="register_candidate")
    @domain_errors_are_final
    @heartbeats
    def register_candidate(self, inp: RegisterCandidateIn) -> VersionView:
        return self._registry.register_version(
            Principal.system(inp.tenant_id), inp.tenant_id, inp.model_name, inp.request_id, reason=inp.reason
        )

    @activity.defn(name="current_version")
    @domain_errors_are_final
    @heartbeats
    def current_version(self, inp: CurrentVersionIn) -> CurrentVersionOut:
        version = self._registry.current(
            Principal.system(inp.tenant_id), inp.tenant_id, inp.model_name, ModelState(inp.state)
        )
        return CurrentVersionOut(version=version)

    @activity.defn(name="transition")
    @domain_errors_are_final
    @heartbeats
    def transition(self, inp: TransitionIn) -> TransitionOut:
        request = TransitionRequest(
            version_id=inp.version_id,
            to_state=ModelState(inp.to_state),
            expected_version=inp.expected_version,
            request_id=inp.request_id,
            reason=inp.reason,
            changes=VersionChanges.model_validate(inp.changes) if inp.changes else None,
            details=inp.details,
        )
        if request.to_state in VERIFIED_ON_ENTRY:
            self._verify_artifact(inp.tenant_id, inp.version_id)
        return TransitionOut(result=self._registry.transition(Principal.system(inp.tenant_id), request))

    @activity.defn(name="promote")
    @domain_errors_are_final
    @heartbeats
    def promote(self, inp: PromoteIn) -> TransitionOut:
        self._verify_artifact(inp.approver.tenant_id, inp.version_id)
        result = self._registry.promote(
            principal_of(inp.approver), inp.version_id, inp.expected_version, inp.request_id, inp.reason
        )
        return TransitionOut(result=result)

    @activity.defn(name="reject")
    @domain_errors_are_final
    @heartbeats
    def reject(self, inp: PromoteIn) -> TransitionOut:
        result = self._registry.reject(
            principal_of(inp.approver), inp.version_id, inp.expected_version, inp.request_id, inp.reason
        )
        return TransitionOut(result=result)

    @activity.defn(name="quarantine")
    @domain_errors_are_final
    @heartbeats
    def quarantine(self, inp: QuarantineIn) -> TransitionOut:
        result = self._registry.quarantine(
            Principal.system(inp.tenant_id), inp.version_id, inp.request_id, inp.reason
        )
        return TransitionOut(result=result)

    @activity.defn(name="record_outcome")
    @domain_errors_are_final
    @heartbeats
    def record_outcome(self, result: RetrainingResult) -> OutcomeRecorded:
        record_retraining_outcome(result)
        return OutcomeRecorded(recorded=True)

    @activity.defn(name="notify")
    @domain_errors_are_final
    @heartbeats
    def notify(self, inp: NotifyIn) -> NotifyOut:
        notify_as(Principal.system(inp.tenant_id), self._notifier, NotificationIn(**inp.model_dump()))
        return NotifyOut(delivered=True)
