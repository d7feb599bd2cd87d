"""A retraining terminated from outside (as the Temporal CLI or Web UI would) leaves no candidate behind.

The run in CANARY is reconciled by the next drift scan, the run in SHADOW by what ``evolution status`` runs: each
candidate goes to FAILED with the reason audited, serving stops routing to it, and the next retraining's candidate
can take its place (the database keeps one SHADOW and one CANARY per tenant and model).
"""

from __future__ import annotations

import asyncio

from temporalio.testing import WorkflowEnvironment

from evolution.contracts import DriftScanInput, RetrainingInput, RolloutTiming
from evolution.demo.scenario import Scenario
from evolution.demo.synthetic import FEATURES, generate_rows
from evolution.lifecycle import ModelState, VersionView
from evolution.platform.wiring import Services
from evolution.registry.stranded import STRANDED_REASON
from evolution.security import Principal
from evolution.serving.predictor import PredictInstance
from evolution.timeutil import utcnow
from tests.support.approvals import decide
from tests.support.histories import replay_and_keep
from tests.support.scenario import seed_tenant
from tests.workflows.test_retraining_approval import wait_for_approval
from workers.orchestrator import TemporalOrchestrator
from workflows.drift_scan import drift_scan_schedule_id
from workflows.retraining import retraining_workflow_id

SCENARIO = Scenario(tenant_id="acme", history_rows=1200)
TIMING = RolloutTiming(look_interval_s=0.5, approval_timeout_s=600, shadow_max_s=600)
SYSTEM = Principal.system("acme")


def seeded(services: Services) -> None:
    seed_tenant(services, SCENARIO)
    services.snapshots.seal(SYSTEM, "acme", utcnow())


async def until_phase(orchestrator: TemporalOrchestrator, phase: str) -> None:
    for _ in range(600):
        status = await orchestrator.retraining_status("acme")
        if status is not None and status.phase == phase:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"never reached {phase}: {await orchestrator.retraining_status('acme')}")


def the_version(services: Services, state: ModelState) -> VersionView:
    [version] = services.registry.in_states(SYSTEM, "acme", "yield", (state,))
    return version


def failed_as_stranded(services: Services, version: VersionView) -> None:
    now = services.registry.get_version(SYSTEM, version.id)
    assert now.state == ModelState.FAILED, now.state
    last = services.registry.audit_trail(SYSTEM, "acme", subject_id=version.id)[-1]
    assert (last.to_state, last.actor) == ("FAILED", "system:reconciler")
    assert last.details["reason"] == STRANDED_REASON and last.details["was"] == version.state.value


def roles(services: Services) -> set[str]:
    predictor = services.predictor(canary_share=0.5, refresh_s=0.0)
    rows = generate_rows(20, seed=5, start=utcnow())
    instances = [
        PredictInstance(request_id=f"r-{i}", features={f: row[f] for f in FEATURES if row.get(f) is not None})
        for i, row in enumerate(rows)
    ]
    return {out.role for out in predictor.predict(SYSTEM, "acme", "yield", instances)}


async def test_a_run_terminated_in_canary_is_reconciled_by_the_next_drift_scan(
    services: Services, worker: None, orchestrator: TemporalOrchestrator, temporal_env: WorkflowEnvironment
) -> None:
    seeded(services)
    await orchestrator.start_retraining(
        RetrainingInput(tenant_id="acme", model_name="yield", trigger="bootstrap", timing=TIMING)
    )
    await wait_for_approval(orchestrator, "acme")
    stranded = the_version(services, ModelState.CANARY)

    await temporal_env.client.get_workflow_handle(retraining_workflow_id("acme")).terminate(
        "operator mistake"
    )
    status = await orchestrator.retraining_status("acme")
    assert status is not None and status.phase == "terminated" and not status.awaiting_approval

    await orchestrator.run_drift_scan(
        DriftScanInput(tenant_id="acme", model_name="yield", auto_retrain=False)
    )
    failed_as_stranded(services, stranded)
    scan = temporal_env.client.get_workflow_handle(f"{drift_scan_schedule_id('acme')}/manual")
    await replay_and_keep(await scan.fetch_history(), "drift-scan-reconciles-first")


async def test_a_run_terminated_in_shadow_is_reconciled_and_the_next_candidate_takes_its_place(
    services: Services, worker: None, orchestrator: TemporalOrchestrator, temporal_env: WorkflowEnvironment
) -> None:
    seeded(services)
    await orchestrator.start_retraining(
        RetrainingInput(tenant_id="acme", model_name="yield", trigger="bootstrap", timing=TIMING)
    )
    await wait_for_approval(orchestrator, "acme")
    await decide(services, orchestrator, "acme")
    assert (await orchestrator.retraining_result("acme")).outcome == "promoted"

    # With a champion, the next candidate waits in SHADOW for labelled pairs (no traffic comes).
    await orchestrator.start_retraining(RetrainingInput(tenant_id="acme", model_name="yield", timing=TIMING))
    await until_phase(orchestrator, "shadow")
    stranded = the_version(services, ModelState.SHADOW)
    assert "shadow" in roles(services)

    await temporal_env.client.get_workflow_handle(retraining_workflow_id("acme")).terminate(
        "operator mistake"
    )
    failed = await services.reconciler.reconcile("acme", orchestrator)  # what `evolution status` runs first
    assert [v.id for v in failed] == [stranded.id]
    failed_as_stranded(services, stranded)
    assert roles(services) == {"champion"}  # serving stopped routing to it at its next refresh
    assert await services.reconciler.reconcile("acme", orchestrator) == []  # nothing left to do

    await orchestrator.start_retraining(RetrainingInput(tenant_id="acme", model_name="yield", timing=TIMING))
    await until_phase(orchestrator, "shadow")
    assert the_version(services, ModelState.SHADOW).number == stranded.number + 1
    await temporal_env.client.get_workflow_handle(retraining_workflow_id("acme")).terminate("end of test")
