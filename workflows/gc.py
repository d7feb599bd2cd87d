"""GcWorkflow (scheduled daily as ``gc/{tenant}``): retention and garbage collection of a tenant's model artifacts.

One activity plans and collects (evolution/governance/garbage_collection.py); it is idempotent, so a retry, or a
run that overlaps a manual ``evolution gc run``, deletes nothing twice. The schedule skips a tick while the previous run still runs.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.gc import GcActivities
    from evolution.contracts import GcInput, GcResult

from workflows.policies import HEARTBEAT_TIMEOUT

GC_EVERY = timedelta(hours=24)
# Planning reads the tenant's versions and asks the store about each candidate digest; collecting deletes one
# version per transaction. The activity heartbeats throughout (HEARTBEAT_TIMEOUT), so a dead worker's run is
# retried within a minute; this bounds the work itself.
GC_TIMEOUT = timedelta(hours=2)
GC_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=10),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=5,
)


def gc_schedule_id(tenant_id: str) -> str:
    return f"gc/{tenant_id}"


@workflow.defn(name="GarbageCollection")
class GcWorkflow:
    @workflow.run
    async def run(self, inp: GcInput) -> GcResult:
        return await workflow.execute_activity_method(
            GcActivities.collect_garbage,
            inp,
            start_to_close_timeout=GC_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=GC_RETRY,
        )
