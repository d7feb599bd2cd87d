"""RetrainingWorkflow on a real Temporal dev server: the mutex, and approvals with tickets (approve, reject, deadline)."""

from __future__ import annotations

import asyncio

import pytest

from evolution.contracts import RetrainingInput, RolloutTiming
from evolution.demo.scenario import Scenario
from evolution.errors import NotFound, PermissionDenied
from evolution.lifecycle import ModelState
from evolution.platform.orchestrator import RetrainingAlreadyRunning, decide_as
from evolution.platform.wiring import Services
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from tests.support.approvals import decide
from tests.support.scenario import seed_tenant
from workers.orchestrator import TemporalOrchestrator

SCENARIO = Scenario(tenant_id="acme", history_rows=1200)
FAST = RolloutTiming(look_interval_s=0.5, approval_timeout_s=120)


async def wait_for_approval(orchestrator: TemporalOrchestrator, tenant: str, timeout_s: float = 120) -> None:
    for _ in range(int(timeout_s / 0.25)):
        status = await orchestrator.retraining_status(tenant)
        if status is not None and status.awaiting_approval:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"never reached approval: {await orchestrator.retraining_status(tenant)}")


@pytest.fixture
def seeded(services: Services) -> Services:
    seed_tenant(services, SCENARIO)
    services.snapshots.seal(Principal.system("acme"), "acme", utcnow())
    return services


async def test_bootstrap_candidate_waits_for_approval_then_becomes_champion(
    seeded: Services, worker: None, orchestrator: TemporalOrchestrator
) -> None:
    await orchestrator.start_retraining(
        RetrainingInput(tenant_id="acme", model_name="yield", trigger="bootstrap", timing=FAST)
    )
    await wait_for_approval(orchestrator, "acme")

    with pytest.raises(RetrainingAlreadyRunning, match="already running"):
        await orchestrator.start_retraining(
            RetrainingInput(tenant_id="acme", model_name="yield", timing=FAST)
        )
    # The service layer issues no ticket to a viewer or to another tenant's manager (forged tickets: test_approval_tickets).
    with pytest.raises(PermissionDenied):
        await decide(seeded, orchestrator, "acme", role=Role.VIEWER)
    with pytest.raises(PermissionDenied):
        await decide_as(
            Principal.for_tenant("maria", Role.MANAGER, "other"),
            orchestrator,
            seeded.approval_tickets,
            "acme",
            "approve",
        )

    answer = await decide(seeded, orchestrator, "acme")
    assert answer.accepted and answer.final_state == "CHAMPION"
    result = await orchestrator.retraining_result("acme")
    assert result.outcome == "promoted" and result.final_state == "CHAMPION"

    system = Principal.system("acme")
    champion = seeded.registry.current(system, "acme", "yield", ModelState.CHAMPION)
    assert champion is not None and champion.id == result.version_id and champion.model_hash
    trail = seeded.registry.audit_trail(system, "acme", subject_id=champion.id)
    assert [e.to_state for e in trail] == ["DRAFT", "TRAINING", "VALIDATED", "SHADOW", "CANARY", "CHAMPION"]
    assert trail[-1].actor == "maria" and trail[-1].role == "manager"
    seeded.loader.load(champion)  # the signed artifacts verify


async def test_rejected_candidate_fails(
    seeded: Services, worker: None, orchestrator: TemporalOrchestrator
) -> None:
    await orchestrator.start_retraining(RetrainingInput(tenant_id="acme", model_name="yield", timing=FAST))
    await wait_for_approval(orchestrator, "acme")
    answer = await decide(seeded, orchestrator, "acme", "reject")
    assert answer.accepted and answer.final_state == "FAILED"
    result = await orchestrator.retraining_result("acme")
    assert result.outcome == "rejected"
    assert seeded.registry.current(Principal.system("acme"), "acme", "yield", ModelState.CHAMPION) is None


async def test_approval_deadline_passing_fails_the_candidate(
    seeded: Services, worker: None, orchestrator: TemporalOrchestrator
) -> None:
    timing = FAST.model_copy(update={"approval_timeout_s": 1.0})
    await orchestrator.start_retraining(RetrainingInput(tenant_id="acme", model_name="yield", timing=timing))
    result = await orchestrator.retraining_result("acme")
    assert result.outcome == "approval_timeout" and result.final_state == "FAILED"
    with pytest.raises(NotFound, match="nothing of tenant 'acme' is waiting"):
        await decide(seeded, orchestrator, "acme")
