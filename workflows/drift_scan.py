"""DriftScanWorkflow (scheduled as ``drift-scan/{tenant}``): seal the latest window, scan it, retrain on alert."""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.breaker import BreakerActivities
    from activities.drift import DriftActivities
    from activities.reconciler import ReconcilerActivities
    from evolution.canary.watch_models import StrandedWatchesIn, watch_workflow_id
    from evolution.contracts import (
        BreakerCheckIn,
        DriftScanInput,
        DriftScanResult,
        ReconcileIn,
        RetrainingBlockIn,
        RetrainingInput,
        ScanIn,
        ScanOut,
        SealIn,
        SealOut,
        SealScanIn,
    )

from workflows.policies import (
    DRIFT_SCAN_TIMEOUT,
    HEARTBEAT_TIMEOUT,
    REGISTRY_TIMEOUT,
    SEAL_AND_SCAN_TIMEOUT,
    SNAPSHOT_TIMEOUT,
    TRANSIENT_RETRY,
)
from workflows.retraining import RetrainingWorkflow, retraining_workflow_id

# Runs started before this change sealed and scanned in two activities; they replay on that path.
SEAL_AND_SCAN_PATCH = "seal-and-scan-in-one-activity"
# Each scan first fails the candidates that retraining runs ended from outside left behind.
RECONCILE_PATCH = "reconcile-stranded-candidates"
# A drift alert while the circuit breaker is open notifies "retraining disabled by the circuit breaker" (audited
# once per scan) instead of starting a retraining that could only end CIRCUIT_OPEN.
BREAKER_BEFORE_RETRAINING_PATCH = "breaker-before-retraining"
# Each scan starts again the post-promotion watches whose workflow ended from outside while their row still watches
# (terminating the workflow must not switch the automatic rollback off).
RESUME_WATCHES_PATCH = "resume-stranded-watches"
CIRCUIT_OPEN = "CIRCUIT_OPEN"


def drift_scan_schedule_id(tenant_id: str) -> str:
    return f"drift-scan/{tenant_id}"


def _capped(default: timedelta, cap_s: float | None) -> timedelta:
    return min(default, timedelta(seconds=cap_s)) if cap_s else default


@workflow.defn(name="DriftScanWorkflow")
class DriftScanWorkflow:
    @workflow.run
    async def run(self, inp: DriftScanInput) -> DriftScanResult:
        # The window's end is fixed here: a retried step (its worker died) finds the window already sealed.
        window_end = workflow.now()
        if workflow.patched(RECONCILE_PATCH):
            await workflow.execute_activity_method(
                ReconcilerActivities.reconcile_candidates,
                ReconcileIn(tenant_id=inp.tenant_id),
                start_to_close_timeout=_capped(REGISTRY_TIMEOUT, inp.step_timeout_s),
                heartbeat_timeout=_capped(HEARTBEAT_TIMEOUT, inp.step_timeout_s),
                retry_policy=TRANSIENT_RETRY,
            )
        if workflow.patched(RESUME_WATCHES_PATCH):
            await self._resume_stranded_watches(inp)
        if workflow.patched(SEAL_AND_SCAN_PATCH):
            both = await workflow.execute_activity_method(
                DriftActivities.seal_and_scan_window,
                SealScanIn(
                    tenant_id=inp.tenant_id,
                    model_name=inp.model_name,
                    min_rows=inp.min_window_rows,
                    window_end=window_end,
                ),
                start_to_close_timeout=_capped(SEAL_AND_SCAN_TIMEOUT, inp.step_timeout_s),
                heartbeat_timeout=_capped(HEARTBEAT_TIMEOUT, inp.step_timeout_s),
                retry_policy=TRANSIENT_RETRY,
            )
            sealed, scan = both.sealed, both.scan
        else:
            sealed, scan = await self._seal_then_scan(inp, window_end)
        if scan is None:  # nothing sealed: too few events since the last window
            return DriftScanResult(
                tenant_id=inp.tenant_id,
                snapshot_id=None,
                report_id=None,
                level="insufficient_data",
                message=sealed.message,
            )
        result = DriftScanResult(
            tenant_id=inp.tenant_id,
            snapshot_id=sealed.snapshot_id,
            report_id=scan.report_id,
            level=scan.level,
            quality_alerts=scan.quality_alerts,
            message=scan.message,
        )
        # Data-quality alerts alone never start a retraining (the level is drift's); the scan marked the window held,
        # so a retraining that drift on it starts waits for an admin to accept it.
        if scan.level != "alert":
            return result
        if not inp.auto_retrain:
            return result.model_copy(update={"retraining": "disabled"})
        if workflow.patched(BREAKER_BEFORE_RETRAINING_PATCH) and not await self._breaker_allows(inp, scan):
            return result.model_copy(update={"retraining": "circuit_open"})
        try:
            # The workflow id is the per-tenant mutex: a retraining already running is attached to, not repeated.
            await workflow.start_child_workflow(
                RetrainingWorkflow.run,
                RetrainingInput(
                    tenant_id=inp.tenant_id,
                    model_name=inp.model_name,
                    trigger="drift",
                    reason=f"drift alert in report {scan.report_id}: {', '.join(scan.alerts)[:300]}",
                    drift_report_id=scan.report_id,
                    snapshot_id=sealed.snapshot_id,
                    timing=inp.retraining_timing,
                ),
                id=retraining_workflow_id(inp.tenant_id),
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            return result.model_copy(update={"retraining": "already_running"})
        return result.model_copy(update={"retraining": "started"})

    async def _resume_stranded_watches(self, inp: DriftScanInput) -> None:
        stranded = await workflow.execute_activity_method(
            ReconcilerActivities.stranded_watches,
            StrandedWatchesIn(tenant_id=inp.tenant_id),
            start_to_close_timeout=_capped(REGISTRY_TIMEOUT, inp.step_timeout_s),
            heartbeat_timeout=_capped(HEARTBEAT_TIMEOUT, inp.step_timeout_s),
            retry_policy=TRANSIENT_RETRY,
        )
        for watch in stranded.resume:
            # Started meanwhile (a retraining promoted again)? That run owns the model's watch now.
            with suppress(WorkflowAlreadyStartedError):
                await workflow.start_child_workflow(
                    "PostPromotionWatch",
                    watch,
                    id=watch_workflow_id(watch.tenant_id, watch.model_name),
                    parent_close_policy=ParentClosePolicy.ABANDON,
                )

    async def _breaker_allows(self, inp: DriftScanInput, scan: ScanOut) -> bool:
        """False (after auditing and notifying it once) while the tenant's circuit breaker is open."""
        breaker = await workflow.execute_activity_method(
            BreakerActivities.check_circuit_breaker,
            BreakerCheckIn(tenant_id=inp.tenant_id),
            start_to_close_timeout=_capped(REGISTRY_TIMEOUT, inp.step_timeout_s),
            heartbeat_timeout=_capped(HEARTBEAT_TIMEOUT, inp.step_timeout_s),
            retry_policy=TRANSIENT_RETRY,
        )
        if breaker.allowed:
            return True
        await workflow.execute_activity_method(
            BreakerActivities.record_retraining_block,
            RetrainingBlockIn(
                tenant_id=inp.tenant_id,
                model_name=inp.model_name,
                code=CIRCUIT_OPEN,
                reason=(
                    f"drift alert in report {scan.report_id}, but retraining disabled by the circuit breaker: "
                    f"{breaker.reason}"
                )[:900],
                request_id=f"{workflow.info().run_id}/circuit-open",
            ),
            start_to_close_timeout=_capped(REGISTRY_TIMEOUT, inp.step_timeout_s),
            heartbeat_timeout=_capped(HEARTBEAT_TIMEOUT, inp.step_timeout_s),
            retry_policy=TRANSIENT_RETRY,
        )
        return False

    async def _seal_then_scan(
        self, inp: DriftScanInput, window_end: datetime
    ) -> tuple[SealOut, ScanOut | None]:
        """The two-activity path, kept for runs recorded before SEAL_AND_SCAN_PATCH (they must replay)."""
        sealed = await workflow.execute_activity_method(
            DriftActivities.seal_window,
            SealIn(tenant_id=inp.tenant_id, min_rows=inp.min_window_rows, window_end=window_end),
            start_to_close_timeout=_capped(SNAPSHOT_TIMEOUT, inp.step_timeout_s),
            heartbeat_timeout=_capped(HEARTBEAT_TIMEOUT, inp.step_timeout_s),
            retry_policy=TRANSIENT_RETRY,
        )
        if sealed.snapshot_id is None:
            return sealed, None
        scan = await workflow.execute_activity_method(
            DriftActivities.scan_drift,
            ScanIn(tenant_id=inp.tenant_id, model_name=inp.model_name, snapshot_id=sealed.snapshot_id),
            start_to_close_timeout=_capped(DRIFT_SCAN_TIMEOUT, inp.step_timeout_s),
            heartbeat_timeout=_capped(HEARTBEAT_TIMEOUT, inp.step_timeout_s),
            retry_policy=TRANSIENT_RETRY,
        )
        return sealed, scan
