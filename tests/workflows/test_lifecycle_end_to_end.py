"""The whole lifecycle on a real dev server: drift detected → retrain → shadow → canary → approval → CHAMPION."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy
from temporalio.testing import WorkflowEnvironment

from evolution.contracts import DriftScanInput, RetrainingInput, RolloutTiming
from evolution.demo.scenario import InProcessTransport, Scenario, TrafficDriver
from evolution.demo.synthetic import DriftSpec
from evolution.lifecycle import ModelState, VersionView
from evolution.platform.wiring import Services
from evolution.security import Principal
from evolution.timeutil import utcnow
from tests.support.approvals import decide
from tests.support.scenario import seed_tenant
from tests.workflows.test_retraining_approval import wait_for_approval
from workers.orchestrator import TemporalOrchestrator

SCENARIO = Scenario(tenant_id="acme", history_rows=1500, round_rows=400)
TIMING = RolloutTiming(look_interval_s=0.5, shadow_min_pairs=150, approval_timeout_s=300)


async def drive_until_approval(
    orchestrator: TemporalOrchestrator, driver: TrafficDriver, max_rounds: int = 40
) -> None:
    for _ in range(max_rounds):
        status = await orchestrator.retraining_status("acme")
        if status is not None and status.awaiting_approval:
            return
        if status is not None and status.phase == "finished":
            raise AssertionError(f"retraining ended without approval: {status}")
        await asyncio.to_thread(driver.round)
        await asyncio.sleep(0.3)
    raise AssertionError(
        f"no decision after {max_rounds} rounds: {await orchestrator.retraining_status('acme')}"
    )


async def champion_and_drifted_traffic(
    services: Services, orchestrator: TemporalOrchestrator
) -> tuple[VersionView, TrafficDriver]:
    """A tenant whose first model was approved, and a driver of live traffic drifted from now on."""
    tenant = seed_tenant(services, SCENARIO)
    services.snapshots.seal(Principal.system("acme"), "acme", utcnow())
    await orchestrator.start_retraining(
        RetrainingInput(tenant_id="acme", model_name="yield", trigger="bootstrap", timing=TIMING)
    )
    await wait_for_approval(orchestrator, "acme")
    await decide(services, orchestrator, "acme", reason="canary won")
    champion = services.registry.current(Principal.system("acme"), "acme", "yield", ModelState.CHAMPION)
    assert champion is not None
    predictor = services.predictor(canary_share=0.5, refresh_s=0.0)
    transport = InProcessTransport(predictor, services.events)
    return champion, TrafficDriver(
        SCENARIO, transport, tenant.key_id, tenant.private_pem, DriftSpec(at=utcnow())
    )


async def test_drift_alert_retrains_and_the_canary_winner_becomes_champion_after_approval(
    services: Services, worker: None, orchestrator: TemporalOrchestrator
) -> None:
    system = Principal.system("acme")
    first, driver = await champion_and_drifted_traffic(services, orchestrator)
    summary = await asyncio.to_thread(driver.round, 1200)
    assert summary.accepted == 1200 and summary.rejected == 0

    scan = await orchestrator.run_drift_scan(
        DriftScanInput(tenant_id="acme", model_name="yield", retraining_timing=TIMING)
    )
    assert scan.level == "alert" and scan.retraining == "started"
    report = services.drift_reports.list_reports(system, "acme")[0]
    services.drift_reports.verify(report, services.keyring)
    assert report.report["baseline"]["model_version_id"] == first.id

    await drive_until_approval(orchestrator, driver)
    assert driver.roles.get("shadow", 0) > 0 and driver.roles.get("canary", 0) > 0
    status = await orchestrator.retraining_status("acme")
    assert status is not None and status.guard is not None and status.guard.action == "promote"
    assert status.guard.n >= 1000 and status.guard.p_promote < 0.05

    answer = await decide(services, orchestrator, "acme", reason="canary won")
    assert answer.final_state == "CHAMPION"
    result = await orchestrator.retraining_result("acme")
    assert result.outcome == "promoted"
    second = services.registry.current(system, "acme", "yield", ModelState.CHAMPION)
    assert second is not None and second.id == result.version_id and second.number == first.number + 1
    assert services.registry.get_version(system, first.id).state == ModelState.DEPRECATED
    trail = [e.to_state for e in services.registry.audit_trail(system, "acme", subject_id=second.id)]
    assert trail == ["DRAFT", "TRAINING", "VALIDATED", "SHADOW", "CANARY", "CHAMPION"]
    assert services.registry.verify_audit(system, "acme").ok


async def test_drift_scan_schedule_is_created_once_and_runs_a_scan(
    services: Services, worker: None, orchestrator: TemporalOrchestrator
) -> None:
    seed_tenant(services, SCENARIO)
    scan = DriftScanInput(tenant_id="acme", model_name="yield", auto_retrain=False)
    first = await orchestrator.ensure_drift_schedule(scan, interval_s=3600)
    again = await orchestrator.ensure_drift_schedule(scan, interval_s=3600)
    assert first == again == "drift-scan/acme"
    await orchestrator.trigger_drift_scan("acme")
    for _ in range(120):
        if services.snapshots.latest(Principal.system("acme"), "acme") is not None:
            break
        await asyncio.sleep(0.25)
    snapshot = services.snapshots.latest(Principal.system("acme"), "acme")
    assert snapshot is not None and snapshot.row_count == SCENARIO.history_rows
    services.snapshots.verify(snapshot, services.keyring)


async def test_scheduling_again_gives_the_existing_scan_schedule_its_new_interval_and_model_and_keeps_it_paused(
    temporal_env: WorkflowEnvironment, orchestrator: TemporalOrchestrator
) -> None:
    first = await orchestrator.ensure_drift_schedule(
        DriftScanInput(tenant_id="acme", model_name="yield"), 3600
    )
    handle = temporal_env.client.get_schedule_handle(first)
    try:
        await handle.pause(note="an operator paused it from the Web UI")
        again = await orchestrator.ensure_drift_schedule(
            DriftScanInput(tenant_id="acme", model_name="rainfall", auto_retrain=False), 1800
        )
        assert again == first
        described = await handle.describe()
        assert [i.every for i in described.schedule.spec.intervals] == [timedelta(minutes=30)]
        assert described.schedule.state.paused
        assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        sent = await temporal_env.client.data_converter.decode(action.args, [DriftScanInput])  # type: ignore[arg-type]
        assert sent == [DriftScanInput(tenant_id="acme", model_name="rainfall", auto_retrain=False)]
    finally:
        await handle.delete()


async def test_a_candidate_that_is_worse_on_live_traffic_is_rolled_back_and_the_champion_stays(
    services: Services, worker: None, orchestrator: TemporalOrchestrator
) -> None:
    system = Principal.system("acme")
    champion, driver = await champion_and_drifted_traffic(services, orchestrator)
    await asyncio.to_thread(driver.round, 1200)
    scan = await orchestrator.run_drift_scan(
        DriftScanInput(tenant_id="acme", model_name="yield", retraining_timing=TIMING)
    )
    assert scan.retraining == "started"
    # The season turns back: live traffic is like the champion's world again, and the candidate is worse there.
    driver.drift = DriftSpec(at=utcnow() + timedelta(days=3650))
    for _ in range(40):
        status = await orchestrator.retraining_status("acme")
        if status is not None and status.phase == "finished":
            break
        await asyncio.to_thread(driver.round)
        await asyncio.sleep(0.3)
    result = await orchestrator.retraining_result("acme")
    assert result.outcome == "rolled_back", result
    assert result.guard is not None and result.guard.q_rollback < 0.05 and result.guard.theta_hat < 0
    assert services.registry.get_version(system, result.version_id or "").state == ModelState.FAILED
    assert services.registry.current(system, "acme", "yield", ModelState.CHAMPION).id == champion.id  # type: ignore[union-attr]
    assert any(n["kind"] == "canary.rolled_back" for n in services.notifier.recent("acme"))
