"""EscalationWorkflow (scheduled as ``notify-escalations``): a request nobody acted on goes to the next recipients.

One schedule for the whole installation, so an escalation is decided in one place; the escalation's own outbox row
is what stops it being sent twice (evolution/notifications/escalation.py).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.escalations import EscalationActivities
    from evolution.contracts import EscalationsIn, EscalationsOut

from workflows.policies import HEARTBEAT_TIMEOUT

ESCALATION_SCHEDULE_ID = "notify-escalations"
ESCALATIONS_EVERY = timedelta(minutes=10)
# One pass reads the recent outbox of every tenant and delivers what is due (SMTP and webhook have their own
# timeouts and retries); a pass that fails is simply the next tick's work. The pass heartbeats (HEARTBEAT_TIMEOUT):
# a dead worker's pass is retried within a minute, not after this.
ESCALATIONS_TIMEOUT = timedelta(minutes=5)
ESCALATIONS_RETRY = RetryPolicy(maximum_attempts=2)


@workflow.defn(name="NotificationEscalations")
class EscalationWorkflow:
    @workflow.run
    async def run(self, inp: EscalationsIn) -> EscalationsOut:
        return await workflow.execute_activity_method(
            EscalationActivities.run_escalations,
            inp,
            start_to_close_timeout=ESCALATIONS_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=ESCALATIONS_RETRY,
        )
