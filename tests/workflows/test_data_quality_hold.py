"""Issue 16: a stuck sensor and a renamed category in the demo's data, on a real Temporal dev server.

The scheduled ``drift-scan/{tenant}`` catches both with the data-quality checks (statistics.md 1b), puts them in the
signed report, notifies that a data-quality alert does not start a retraining, and marks the window held. The drift
alert on the same window does start a retraining, which waits, registering and training nothing, until an admin runs
``evolution snapshot accept``; then it goes on.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from temporalio.client import ScheduleActionExecutionStartWorkflow
from temporalio.testing import WorkflowEnvironment

from evolution.contracts import DriftScanInput, DriftScanResult, RetrainingStatus, RolloutTiming
from evolution.data.sources import records_to_events
from evolution.demo.scenario import Scenario
from evolution.demo.synthetic import TARGET, SensorFaults, generate_rows, inject_faults
from evolution.lifecycle import ModelState
from evolution.platform.wiring import Services
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from tests.support.histories import replay_and_keep
from tests.support.models import install_model
from tests.support.scenario import seed_tenant
from tests.workflows.test_drift_scan_workflow import scheduled_activities
from workers.orchestrator import TemporalOrchestrator
from workflows.retraining import retraining_workflow_id

ADMIN = Principal.for_tenant("ada", Role.ADMIN, "acme")
FAULTS = SensorFaults(stuck={"soil_ph": 6.5}, renamed={"crop": {"maize": "corn"}})


async def scheduled_workflow(temporal_env: WorkflowEnvironment, schedule_id: str) -> str:
    """Trigger the schedule now; the id of the workflow it started."""
    handle = temporal_env.client.get_schedule_handle(schedule_id)
    await handle.trigger()
    for _ in range(300):
        actions = (await handle.describe()).info.recent_actions
        if actions:
            started = actions[-1].action
            assert isinstance(started, ScheduleActionExecutionStartWorkflow)
            return started.workflow_id
        await asyncio.sleep(0.1)
    raise AssertionError(f"schedule {schedule_id} started nothing")


async def status_when(
    orchestrator: TemporalOrchestrator, tenant: str, done: object, timeout_s: float = 60.0
) -> RetrainingStatus:
    status = None
    for _ in range(int(timeout_s * 10)):
        status = await orchestrator.retraining_status(tenant)
        if status is not None and done(status):  # type: ignore[operator]
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"retraining status never got there: {status}")


async def test_a_stuck_sensor_and_a_renamed_category_are_caught_notified_and_not_retrained_on_until_accepted(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    temporal_env: WorkflowEnvironment,
    tmp_path: Path,
) -> None:
    seeded = seed_tenant(services, Scenario(tenant_id="acme", history_rows=400))
    services.snapshots.seal(ADMIN, "acme", utcnow() - timedelta(minutes=30))
    install_model(services, "acme", tmp_path, ModelState.CHAMPION)
    services.baselines.reset(ADMIN, "acme", "yield", "the healthy history is the norm", services.keyring)
    champion = services.registry.current(ADMIN, "acme", "yield", ModelState.CHAMPION)
    assert champion is not None

    # The next window: a soil-pH probe stuck on 6.5 and "maize" renamed "corn" upstream.
    rows = inject_faults(generate_rows(300, 11, utcnow() - timedelta(minutes=20), period_s=2), FAULTS)
    events = records_to_events(
        rows, "acme", seeded.key_id, seeded.private_pem, target=TARGET, request_prefix="faulty"
    )
    assert services.events.ingest_objects(ADMIN, "acme", list(events), "test").accepted == 300

    timing = RolloutTiming(look_interval_s=0.5, step_timeout_s=30, approval_timeout_s=600)
    schedule_id = await orchestrator.ensure_drift_schedule(
        DriftScanInput(tenant_id="acme", model_name="yield", retraining_timing=timing), interval_s=24 * 3600
    )
    schedule = temporal_env.client.get_schedule_handle(schedule_id)
    try:
        scan_id = await scheduled_workflow(temporal_env, schedule_id)
        result = await temporal_env.client.get_workflow_handle(scan_id, result_type=DriftScanResult).result()
    finally:
        await schedule.delete()

    # Caught, with reason codes, counts and p in the signed report.
    assert set(result.quality_alerts) >= {"soil_ph: stuck", "crop: unseen_categories"}, result
    report = services.drift_reports.list_reports(ADMIN, "acme")[0]
    services.drift_reports.verify(report, services.keyring)
    fired = {(a["feature"], a["reason_code"]): a for a in report.report["data_quality"]["alerts"]}
    assert {("soil_ph", "stuck"), ("crop", "unseen_categories")} <= set(fired)
    assert fired[("crop", "unseen_categories")]["k"] > 0 and fired[("crop", "unseen_categories")]["m"] == 300
    assert fired[("soil_ph", "stuck")]["p_adjusted"] < 0.01
    assert report.report["data_quality"]["starts_retraining"] is False

    # Notified like a drift alert, saying it starts no retraining and naming the features and checks in words.
    outbox = services.notifier.recent("acme")  # type: ignore[attr-defined]
    quality = [n for n in outbox if n["kind"] == "data_quality.alert"]
    assert len(quality) == 1 and quality[0]["severity"] == "alert"
    subject = quality[0]["subject"]
    assert "soil_ph stuck on one value" in subject and "crop values never seen before" in subject
    assert "does not start a retraining" in subject

    # The drift alert started a retraining; it waits on the held window and trains nothing.
    assert result.level == "alert" and result.retraining == "started"
    waiting = await status_when(orchestrator, "acme", lambda s: s.phase == "awaiting_snapshot_acceptance")
    assert waiting.held_windows == [result.snapshot_id]
    assert f"evolution snapshot accept acme {result.snapshot_id}" in waiting.message
    await asyncio.sleep(2 * timing.look_interval_s)  # several looks later: still nothing registered
    versions = services.registry.list_versions(ADMIN, "acme", "yield")
    assert [v.id for v in versions] == [champion.id]
    assert any(n["kind"] == "retraining.held_for_data_quality" for n in services.notifier.recent("acme"))  # type: ignore[attr-defined]

    # An admin accepts the window (audited): the retraining goes on and registers its candidate.
    assert result.snapshot_id is not None
    services.snapshot_holds.accept(ADMIN, "acme", result.snapshot_id, "probe checked: the values are real")
    audit = [e for e in services.registry.audit_trail(ADMIN, "acme") if e.action == "snapshot.accepted"]
    assert len(audit) == 1 and audit[0].actor == "ada"
    going = await status_when(orchestrator, "acme", lambda s: s.version_id is not None)
    assert going.held_windows == []
    retraining = temporal_env.client.get_workflow_handle(retraining_workflow_id("acme"))
    await retraining.terminate("test over")

    # Both runs replay (PATCH_QUALITY_HOLD); EVOLUTION_RECORD_HISTORIES=1 records them for test_replay.py.
    history = await retraining.fetch_history()
    assert "check_quality_hold" in scheduled_activities(history)
    await replay_and_keep(history, "retraining-data-quality-hold")
    await replay_and_keep(
        await temporal_env.client.get_workflow_handle(scan_id).fetch_history(), "drift-scan-data-quality"
    )
