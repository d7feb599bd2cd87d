"""The escalation activity: one pass of the configured escalation policy (nothing to do for the bare outbox)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from activities.errors import domain_errors_are_final
from activities.heartbeat import heartbeats
from evolution.contracts import EscalationsIn, EscalationsOut

if TYPE_CHECKING:  # the services are injected: importing them here would load SQLAlchemy into the sandbox
    from evolution.notifications.fanout import FanOutNotifier


class EscalationActivities:
    def __init__(self, escalator: FanOutNotifier | None) -> None:
        """``escalator``: the notifier when it has channels to escalate to; None for the bare outbox."""
        self._escalator = escalator

    @activity.defn(name="run_escalations")
    @domain_errors_are_final
    @heartbeats
    def run_escalations(self, inp: EscalationsIn) -> EscalationsOut:
        if self._escalator is None:
            return EscalationsOut()  # the outbox alone: no channel to escalate to
        results = self._escalator.run_escalations(tenant_ids=inp.tenants)
        failed = sum(1 for r in results for c in r.channels if not c.ok)
        return EscalationsOut(escalated=len(results), failed_channels=failed)
