"""The Temporal adapter of the orchestration port (used by the CLI, the demo and the dashboard)."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from evolution.contracts import (
    ApprovalRequest,
    ApprovalResponse,
    DriftScanInput,
    DriftScanResult,
    EscalationsIn,
    GcInput,
    RetrainingInput,
    RetrainingResult,
    RetrainingStatus,
)
from evolution.errors import InvalidInput, NotFound
from evolution.platform.orchestrator import OrchestratorUnavailable, RetrainingAlreadyRunning
from evolution.platform.settings import Settings
from workers.temporal_client import connect_client
from workflows.drift_scan import DriftScanWorkflow, drift_scan_schedule_id
from workflows.escalations import ESCALATION_SCHEDULE_ID, ESCALATIONS_EVERY, EscalationWorkflow
from workflows.gc import GC_EVERY, GcWorkflow, gc_schedule_id
from workflows.retraining import RetrainingWorkflow, retraining_workflow_id

RUN_TIMEOUT = timedelta(days=3)


class TemporalOrchestrator:
    def __init__(self, client: Client, task_queue: str) -> None:
        self._client = client
        self._task_queue = task_queue

    async def ensure_drift_schedule(self, scan: DriftScanInput, interval_s: float) -> str:
        """Create ``drift-scan/{tenant}``, or give the existing one this scan and interval (idempotent).

        An existing schedule keeps its state (paused from the Web UI stays paused) and its overlap policy; only what
        the caller says is replaced, so `evolution schedule --every-minutes 30` after an earlier 60 is what it says."""
        schedule_id = drift_scan_schedule_id(scan.tenant_id)
        action = ScheduleActionStartWorkflow(
            DriftScanWorkflow.run, scan, id=schedule_id, task_queue=self._task_queue
        )
        spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=interval_s))])
        try:
            await self._client.create_schedule(
                schedule_id,
                Schedule(action=action, spec=spec, policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP)),
            )
        except ScheduleAlreadyRunningError:

            def replaced(existing: ScheduleUpdateInput) -> ScheduleUpdate:
                return ScheduleUpdate(
                    schedule=dataclasses.replace(existing.description.schedule, action=action, spec=spec)
                )

            await self._client.get_schedule_handle(schedule_id).update(replaced)
        return schedule_id

    async def ensure_gc_schedule(self, tenant_id: str) -> str:
        """Create ``gc/{tenant}`` (daily retention and garbage collection) if it does not exist (idempotent)."""
        schedule_id = gc_schedule_id(tenant_id)
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                GcWorkflow.run, GcInput(tenant_id=tenant_id), id=schedule_id, task_queue=self._task_queue
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=GC_EVERY)]),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        )
        with contextlib.suppress(ScheduleAlreadyRunningError):
            await self._client.create_schedule(schedule_id, schedule)
        return schedule_id

    async def ensure_escalation_schedule(self) -> str:
        """Create ``notify-escalations`` (the escalation policy, every few minutes) if it does not exist."""
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                EscalationWorkflow.run,
                EscalationsIn(),
                id=ESCALATION_SCHEDULE_ID,
                task_queue=self._task_queue,
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=ESCALATIONS_EVERY)]),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        )
        with contextlib.suppress(ScheduleAlreadyRunningError):
            await self._client.create_schedule(ESCALATION_SCHEDULE_ID, schedule)
        return ESCALATION_SCHEDULE_ID

    async def trigger_drift_scan(self, tenant_id: str) -> None:
        await self._client.get_schedule_handle(drift_scan_schedule_id(tenant_id)).trigger(
            overlap=ScheduleOverlapPolicy.ALLOW_ALL
        )

    async def run_drift_scan(self, scan: DriftScanInput) -> DriftScanResult:
        return await self._client.execute_workflow(
            DriftScanWorkflow.run,
            scan,
            id=f"{drift_scan_schedule_id(scan.tenant_id)}/manual",
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )

    async def start_retraining(self, request: RetrainingInput) -> str:
        workflow_id = retraining_workflow_id(request.tenant_id)
        try:
            await self._client.start_workflow(
                RetrainingWorkflow.run,
                request,
                id=workflow_id,
                task_queue=self._task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                execution_timeout=RUN_TIMEOUT,
            )
        except WorkflowAlreadyStartedError:
            raise RetrainingAlreadyRunning(
                f"a retraining is already running for tenant {request.tenant_id!r} ({workflow_id}); "
                "wait for it or approve/reject it"
            ) from None
        return workflow_id

    async def retraining_status(self, tenant_id: str) -> RetrainingStatus | None:
        handle = self._client.get_workflow_handle(retraining_workflow_id(tenant_id))
        try:
            description = await handle.describe()
            status = await handle.query(RetrainingWorkflow.status)
        except RPCError:
            return None
        if description.status not in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED):
            # Terminated, reset away, timed out or cancelled from outside: its last status is not what happens now.
            ended = description.status.name.lower() if description.status else "closed"
            status.awaiting_approval = False
            status.phase = ended
            status.message = (
                f"the run was {ended} from outside before it finished; its candidate is reconciled"
            )
        return status

    async def run_is_open(self, workflow_id: str, run_id: str | None) -> bool:
        try:
            description = await self._client.get_workflow_handle(workflow_id, run_id=run_id).describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return False  # gone from the server's retention: long ended
            raise OrchestratorUnavailable(
                f"cannot ask Temporal about {workflow_id} ({error.message})"
            ) from None
        return description.status == WorkflowExecutionStatus.RUNNING

    async def retraining_result(self, tenant_id: str) -> RetrainingResult:
        handle = self._client.get_workflow_handle(
            retraining_workflow_id(tenant_id), result_type=RetrainingResult
        )
        return await handle.result()

    async def send_approval(self, tenant_id: str, request: ApprovalRequest) -> ApprovalResponse:
        handle = self._client.get_workflow_handle(retraining_workflow_id(tenant_id))
        try:
            # By name: the SDK's typing of async update methods does not unwrap their coroutine result.
            return await handle.execute_update("approval", request, result_type=ApprovalResponse)
        except WorkflowUpdateFailedError as error:
            cause = error.cause
            raise InvalidInput(f"approval refused: {getattr(cause, 'message', None) or cause}") from None
        except RPCError as error:
            raise NotFound(f"no retraining of tenant {tenant_id!r} is waiting: {error.message}") from None

    async def close(self) -> None:
        return None


async def connect(settings: Settings) -> TemporalOrchestrator:
    """Raises :class:`OrchestratorUnavailable` naming the problem (unreachable, wrong CA, refused credentials)."""
    return TemporalOrchestrator(await connect_client(settings), settings.task_queue)
