"""DriftScanWorkflow (scheduled as ``drift-scan/{tenant}``): seal the latest window, scan it, retrain on alert."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from evolution.contracts import (
        DriftScanInput,
        DriftScanResult,
        RetrainingInput,
        ScanIn,
        ScanOut,
        SealIn,
        SealOut,
    )

from workflows.policies import DRIFT_SCAN_TIMEOUT, SNAPSHOT_TIMEOUT, TRANSIENT_RETRY
from workflows.retraining import RetrainingWorkflow, retraining_workflow_id


def drift_scan_schedule_id(tenant_id: str) -> str:
    return f"drift-scan/{tenant_id}"


def _capped(default: timedelta, cap_s: float | None) -> timedelta:
    return min(default, timedelta(seconds=cap_s)) if cap_s else default


@workflow.defn(name="DriftScanWorkflow")
class DriftScanWorkflow:
    @workflow.run
    async def run(self, inp: DriftScanInput) -> DriftScanResult:
        sealed = await workflow.execute_activity(
            "seal_window",
            # The window's end is fixed here: a retried seal (its worker died) finds the window already sealed.
            SealIn(tenant_id=inp.tenant_id, min_rows=inp.min_window_rows, window_end=workflow.now()),
            result_type=SealOut,
            start_to_close_timeout=_capped(SNAPSHOT_TIMEOUT, inp.step_timeout_s),
            retry_policy=TRANSIENT_RETRY,
        )
        if sealed.snapshot_id is None:
            return DriftScanResult(
                tenant_id=inp.tenant_id,
                snapshot_id=None,
                report_id=None,
                level="insufficient_data",
                message=sealed.message,
            )
        scan = await workflow.execute_activity(
            "scan_drift",
            ScanIn(tenant_id=inp.tenant_id, model_name=inp.model_name, snapshot_id=sealed.snapshot_id),
            result_type=ScanOut,
            start_to_close_timeout=_capped(DRIFT_SCAN_TIMEOUT, inp.step_timeout_s),
            retry_policy=TRANSIENT_RETRY,
        )
        result = DriftScanResult(
            tenant_id=inp.tenant_id,
            snapshot_id=sealed.snapshot_id,
            report_id=scan.report_id,
            level=scan.level,
            message=scan.message,
        )
        if scan.level != "alert":
            return result
        if not inp.auto_retrain:
            return result.model_copy(update={"retraining": "disabled"})
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
                    timing=inp.retraining_timing,
                ),
                id=retraining_workflow_id(inp.tenant_id),
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            return result.model_copy(update={"retraining": "already_running"})
        return result.model_copy(update={"retraining": "started"})
