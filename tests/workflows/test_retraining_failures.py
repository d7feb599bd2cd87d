"""RetrainingWorkflow's unhappy paths: quota blocks, tampered data quarantines; and replay stays deterministic."""

from __future__ import annotations

import os

from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from evolution.contracts import RetrainingInput, RolloutTiming
from evolution.demo.scenario import Scenario
from evolution.lifecycle import ModelState
from evolution.platform.wiring import Services
from evolution.registry.db import transaction
from evolution.registry.schema import Tenant
from evolution.security import Principal
from evolution.timeutil import utcnow
from tests.support.histories import replay_and_keep
from tests.support.scenario import seed_tenant
from workers.orchestrator import TemporalOrchestrator
from workflows.retraining import retraining_workflow_id

SCENARIO = Scenario(tenant_id="acme", history_rows=600)
FAST = RolloutTiming(look_interval_s=0.5, approval_timeout_s=1)


async def test_exhausted_quota_blocks_retraining_with_a_recorded_reason(
    services: Services, worker: None, orchestrator: TemporalOrchestrator
) -> None:
    seed_tenant(services, SCENARIO)
    with transaction(services.factory, "acme") as session:
        session.get(Tenant, "acme").gpu_hours_quota = 0.0  # type: ignore[union-attr]
    await orchestrator.start_retraining(RetrainingInput(tenant_id="acme", model_name="yield", timing=FAST))
    result = await orchestrator.retraining_result("acme")
    assert result.outcome == "blocked" and "BLOCK_RETRAINING" in result.reason
    assert result.version_id is None
    notes = services.notifier.recent("acme")
    assert notes and notes[0]["kind"] == "retraining.blocked" and "BLOCK_RETRAINING" in notes[0]["subject"]


async def test_tampered_training_snapshot_quarantines_the_candidate(
    services: Services, worker: None, orchestrator: TemporalOrchestrator
) -> None:
    seed_tenant(services, SCENARIO)
    snapshot = services.snapshots.seal(Principal.system("acme"), "acme", utcnow())
    path = next((services.settings.artifacts_dir / "acme").rglob(snapshot.artifact_digest))
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes().replace(b'"actual":', b'"actual": ', 1))
    await orchestrator.start_retraining(RetrainingInput(tenant_id="acme", model_name="yield", timing=FAST))
    result = await orchestrator.retraining_result("acme")
    assert result.outcome == "quarantined" and result.final_state == "QUARANTINED"
    version = services.registry.get_version(Principal.system("acme"), result.version_id or "")
    assert version.state == ModelState.QUARANTINED
    reason = services.registry.audit_trail(Principal.system("acme"), "acme", subject_id=version.id)[
        -1
    ].details
    assert "corrupted" in reason["integrity_failure"]


async def test_finished_retraining_history_replays_deterministically(
    services: Services, worker: None, orchestrator: TemporalOrchestrator, temporal_env: WorkflowEnvironment
) -> None:
    seed_tenant(services, SCENARIO)
    services.snapshots.seal(Principal.system("acme"), "acme", utcnow())
    await orchestrator.start_retraining(RetrainingInput(tenant_id="acme", model_name="yield", timing=FAST))
    assert (await orchestrator.retraining_result("acme")).outcome == "approval_timeout"
    history: WorkflowHistory = await temporal_env.client.get_workflow_handle(
        retraining_workflow_id("acme")
    ).fetch_history()
    await replay_and_keep(history, "retraining-approval-timeout")
