"""A post-promotion watch terminated from outside (raw Temporal client, Web UI) is not switched off: the next drift
scan finds its row still watching with no workflow running, audits and notifies that, and starts it again on the
same row (its harm test's state and cursor), once."""

from __future__ import annotations

import asyncio

from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from evolution.canary.watch_models import WatchInput, watch_workflow_id
from evolution.contracts import DriftScanInput, WatchPolicy
from evolution.lifecycle import ModelState
from evolution.platform.wiring import Services
from evolution.security import Principal, Role
from tests.support.histories import replay_and_keep
from tests.support.promotions import promoted
from workers.orchestrator import TemporalOrchestrator

S = ModelState
SYSTEM = Principal.system("acme")
MANAGER = Principal.for_tenant("maria", Role.MANAGER, "acme")
# Looks far apart: the watch only has to be running, not to decide anything.
SLOW_LOOKS = WatchPolicy(min_s=3600, min_labels=10, look_interval_s=3600)


async def started_watch(
    temporal_env: WorkflowEnvironment, services: Services, task_queue: str
) -> tuple[WorkflowHandle[object, object], str]:
    first, second = promoted(services), promoted(services)
    handle = await temporal_env.client.start_workflow(
        "PostPromotionWatch",
        WatchInput(
            tenant_id="acme",
            model_name="yield",
            champion_version_id=second.id,
            previous_version_id=first.id,
            policy=SLOW_LOOKS,
        ),
        id=watch_workflow_id("acme", "yield"),
        task_queue=task_queue,
    )
    for _ in range(100):
        watches = services.watches.progress(SYSTEM, "acme")
        if watches:
            return handle, watches[0].watch_id
        await asyncio.sleep(0.1)
    raise AssertionError("the watch never recorded its row")


def audited(services: Services, action: str) -> list[str]:
    return [e.subject_id for e in services.registry.audit_trail(SYSTEM, "acme") if e.action == action]


async def test_a_watch_terminated_from_outside_is_resumed_on_its_own_row_by_the_next_drift_scan(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    temporal_env: WorkflowEnvironment,
    task_queue: str,
) -> None:
    services.tenants.ensure_tenant(Principal.for_tenant("root", Role.ADMIN, "acme"), "acme")
    handle, watch_id = await started_watch(temporal_env, services, task_queue)
    await handle.terminate(reason="an operator switching the rollback off")

    scan = await orchestrator.run_drift_scan(DriftScanInput(tenant_id="acme", model_name="yield"))
    assert scan.level == "insufficient_data"  # no events: the scan's reconciling comes first all the same
    scan_history = await temporal_env.client.get_workflow_handle("drift-scan/acme/manual").fetch_history()

    resumed = temporal_env.client.get_workflow_handle(watch_workflow_id("acme", "yield"))
    description = await resumed.describe()
    assert (
        description.status == WorkflowExecutionStatus.RUNNING and description.run_id != handle.result_run_id
    )
    first_event = (await resumed.fetch_history()).events[0]
    started_with = first_event.workflow_execution_started_event_attributes.input.payloads[0].data
    assert watch_id.encode() in started_with  # the same row: no new watch, no new harm test
    assert [w.watch_id for w in services.watches.progress(SYSTEM, "acme")] == [watch_id]
    assert [w.status for w in services.watches.progress(SYSTEM, "acme")] == ["watching"]
    assert audited(services, "watch.resumed") == [watch_id]
    assert any(n["kind"] == "watch.resumed" for n in services.notifier.recent("acme"))

    # A scan while the resumed watch runs leaves it alone.
    await orchestrator.run_drift_scan(DriftScanInput(tenant_id="acme", model_name="yield"))
    assert audited(services, "watch.resumed") == [watch_id]
    assert (await resumed.describe()).run_id == description.run_id
    await replay_and_keep(scan_history, "drift-scan-resumes-a-watch")
