"""The escalation activity: one pass of the configured escalation policy, and delivery of waiting lineage events."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from activities.errors import domain_errors_are_final
from activities.heartbeat import heartbeats
from evolution.contracts import EscalationsIn, EscalationsOut

if TYPE_CHECKING:  # the services are injected: importing them here would load SQLAlchemy into the sandbox
    from evolution.notifications.fanout import FanOutNotifier
    from evolution.notifications.lineage import LineageDelivery


class EscalationActivities:
    def __init__(self, escalator: FanOutNotifier | None, lineage: LineageDelivery | None = None) -> None:
        """``escalator``: the notifier when it has channels to escalate to; None for the bare outbox.
        ``lineage``: delivers the OpenLineage events the outbox holds (the schedule is their retry)."""
        self._escalator = escalator
        self._lineage = lineage

    @activity.defn(name="run_escalations")
    @domain_errors_are_final
    @heartbeats
    def run_escalations(self, inp: EscalationsIn) -> EscalationsOut:
        out = EscalationsOut()
        if self._lineage is not None:
            # Never fails the pass: an endpoint that is down keeps its events for the next one.
            lineage = self._lineage.deliver_pending(inp.tenants)
            out.lineage_delivered, out.lineage_pending = lineage.delivered, lineage.pending
        if self._escalator is None:
            return out  # the outbox alone: no channel to escalate to
        results = self._escalator.run_escalations(tenant_ids=inp.tenants)
        out.escalated = len(results)
        out.failed_channels = sum(1 for r in results for c in r.channels if not c.ok)
        return out
