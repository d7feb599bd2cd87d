"""The garbage-collection activity: plan and collect one tenant's model artifacts, heartbeating as it goes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from activities.errors import domain_errors_are_final
from activities.heartbeat import heartbeating, marks_heartbeats
from evolution.contracts import GcInput, GcResult
from evolution.security import Principal

if TYPE_CHECKING:  # the services are injected: importing them here would load SQLAlchemy into the sandbox
    from evolution.governance.garbage_collection import GcReport, RetentionService


class GcActivities:
    def __init__(self, retention: RetentionService) -> None:
        self._retention = retention

    @activity.defn(name="collect_garbage")
    @domain_errors_are_final
    @marks_heartbeats
    def collect_garbage(self, inp: GcInput) -> GcResult:
        # Planning asks the store about every candidate digest and reports nothing: the side beats cover it.
        with heartbeating("planning") as beat:
            report = self._retention.run(
                Principal.system(inp.tenant_id, "gc"),
                inp.tenant_id,
                inp.model_name,
                dry_run=inp.dry_run,
                progress=beat,
            )
        return gc_result(report)


def gc_result(report: GcReport) -> GcResult:
    plan = report.plan
    if report.dry_run:
        collected = [v.version_id for v in plan.versions if v.decision == "collect"]
        artifacts, size = plan.totals.artifacts_deleted, plan.totals.bytes_deleted
    else:
        collected = [c.version_id for c in report.collected]
        artifacts, size = report.artifacts_deleted, report.bytes_deleted
    return GcResult(
        tenant_id=report.tenant_id,
        dry_run=report.dry_run,
        deferred=plan.deferred,
        versions_kept=plan.totals.versions_kept,
        bytes_kept=plan.totals.bytes_kept,
        collected=collected,
        artifacts_deleted=artifacts,
        bytes_deleted=size,
        left_alone=report.left_alone,
        errors=report.errors,
    )
