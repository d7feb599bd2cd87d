"""DriftScanWorkflow seals and scans in one activity; runs recorded when it took two still replay.

The recorded histories (histories/drift-scan-*.json) are replayed with every other recorded history by
tests/workflows/test_retraining_failures.py::test_recorded_histories_still_replay: drift-scan-two-activities.json
was recorded before the change (seal_window, then scan_drift) and replays through the unpatched branch.
"""

from __future__ import annotations

import os
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from evolution.contracts import DriftScanInput
from evolution.demo.scenario import Scenario
from evolution.platform.wiring import Services
from evolution.security import Principal
from tests.support.scenario import seed_tenant
from workers.orchestrator import TemporalOrchestrator
from workers.worker import WORKFLOWS
from workflows.drift_scan import drift_scan_schedule_id

HISTORIES = Path(__file__).parent / "histories"


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
    assert scheduled_activities(history) == ["seal_and_scan_window"]
    await Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter).replay_workflow(history)
    if os.environ.get("EVOLUTION_RECORD_HISTORIES"):  # refresh the recorded history after a deliberate change
        (HISTORIES / "drift-scan-one-activity.json").write_text(history.to_json())


def test_the_run_recorded_before_the_change_took_two_activities() -> None:
    recorded = HISTORIES / "drift-scan-two-activities.json"
    history = WorkflowHistory.from_json("drift-scan-two-activities", recorded.read_text())
    assert scheduled_activities(history) == ["seal_window", "scan_drift"]
