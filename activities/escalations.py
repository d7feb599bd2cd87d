"""The escalation activity: one pass of the configured escalation policy (nothing to do for the bare outbox)."""

from __future__ import annotations

from temporalio import activity

from activities.errors import domain_errors_are_final
from evolution.contracts import EscalationsIn, EscalationsOut
from evolution.notifications.fanout import FanOutNotifier
from evolution.notifications.outbox import Notifier


class EscalationActivities:
    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    @activity.defn(name="run_escalations")
    @domain_errors_are_final
    def run_escalations(self, inp: EscalationsIn) -> EscalationsOut:
        if not isinstance(self._notifier, FanOutNotifier):
            return EscalationsOut()  # the outbox alone: no channel to escalate to
        results = self._notifier.run_escalations(tenant_ids=inp.tenants)
        failed = sum(1 for r in results for c in r.channels if not c.ok)
        return EscalationsOut(escalated=len(results), failed_channels=failed)
