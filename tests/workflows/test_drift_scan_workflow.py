"""DriftScanWorkflow seals and scans in one activity; runs recorded when it took two still replay.

The recorded histories (histories/drift-scan-*.json) are replayed with every other recorded history by
tests/workflows/test_replay.py: drift-scan-two-activities.json
was recorded before the change (seal_window, then scan_drift) and replays through the unpatched branch.
"""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from evolution.contracts import DriftScanInput
from evolution.demo.scenario import Scenario
from evolution.platform.wiring import Services
from evolution.security import Principal
from tests.support.histories import recorded_history, replay_and_keep
from tests.support.scenario import seed_tenant
from workers.orchestrator import TemporalOrchestrator
from workflows.drift_scan import drift_scan_schedule_id


def scheduled_activities(history: WorkflowHistory) -> list[str]:
    return [
        event.activity_task_scheduled_event_attributes.activity_type.name
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


async def test_a_scan_seals_and_scans_its_window_in_one_activity_and_replays(
    services: Services, worker: None, orchestrator: TemporalOrchestrator, temporal_env: WorkflowEnvironment
) -> None:
    seed_tenant(services, Scenario(tenant_id="acme", history_rows=300))
    result = await orchestrator.run_drift_scan(
        DriftScanInput(tenant_id="acme", model_name="yield", auto_retrain=False)
    )
    snapshot = services.snapshots.latest(Principal.system("acme"), "acme")
    assert snapshot is not None and snapshot.row_count == 300
    assert result.snapshot_id == snapshot.id and result.level == "no_champion"

    history = await temporal_env.client.get_workflow_handle(
        f"{drift_scan_schedule_id('acme')}/manual"
    ).fetch_history()
    assert scheduled_activities(history) == [
        "reconcile_candidates",
        "stranded_watches",
        "seal_and_scan_window",
    ]
    await replay_and_keep(history, "drift-scan-one-activity")


def test_the_run_recorded_before_the_change_took_two_activities() -> None:
    history = recorded_history("drift-scan-two-activities")
    assert scheduled_activities(history) == ["seal_window", "scan_drift"]
