"""Approve, reject and forced rollback from the dashboard reach the workflow and the audit log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from temporalio.testing import WorkflowEnvironment

from evolution.contracts import RetrainingInput, RolloutTiming
from evolution.demo.scenario import Scenario
from evolution.lifecycle import ModelState
from evolution.platform.wiring import Services
from evolution.security import Principal
from evolution.timeutil import utcnow
from tests.dashboard.conftest import ROOT
from tests.support.models import install_model
from tests.support.scenario import seed_tenant
from tests.workflows.test_retraining_approval import wait_for_approval
from workers.orchestrator import TemporalOrchestrator

TIMING = RolloutTiming(look_interval_s=0.5, approval_timeout_s=300)


@pytest.fixture
def engine_env(monkeypatch: pytest.MonkeyPatch, temporal_env: WorkflowEnvironment, task_queue: str) -> None:
    monkeypatch.setenv("EVOLUTION_TEMPORAL_ADDRESS", temporal_env.client.service_client.config.target_host)
    monkeypatch.setenv("EVOLUTION_TASK_QUEUE", task_queue)


async def waiting_candidate(services: Services, orchestrator: TemporalOrchestrator) -> None:
    seed_tenant(services, Scenario(tenant_id="acme", history_rows=600))
    services.snapshots.seal(ROOT, "acme", utcnow())
    await orchestrator.start_retraining(
        RetrainingInput(tenant_id="acme", model_name="yield", trigger="bootstrap", timing=TIMING)
    )
    await wait_for_approval(orchestrator, "acme")


def button(at: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(b for b in at.button if b.label == label)


@pytest.mark.parametrize(("decision", "state"), [("Approve", "CHAMPION"), ("Reject", "FAILED")])
async def test_a_manager_decides_from_the_dashboard(
    app: Callable[..., AppTest],
    engine_env: None,
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    decision: str,
    state: str,
) -> None:
    await waiting_candidate(services, orchestrator)
    at = app("manager", username="maria")
    await asyncio.to_thread(at.run)
    assert not at.exception, at.exception
    assert "waits for a manager's decision" in at.info[0].value
    at.text_input(key="approval_reason").input("canary looks right")
    button(at, decision).click()
    await asyncio.to_thread(at.run)
    assert not at.exception, at.exception
    assert f"→ {state}" in at.success[-1].value
    result = await orchestrator.retraining_result("acme")
    assert result.final_state == state
    last = services.registry.audit_trail(ROOT, "acme", subject_id=result.version_id)[-1]
    assert (last.actor, last.role, last.to_state) == ("maria", "manager", state)


async def test_a_viewer_is_offered_no_decision(
    app: Callable[..., AppTest],
    engine_env: None,
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
) -> None:
    await waiting_candidate(services, orchestrator)
    at = app("viewer")
    await asyncio.to_thread(at.run)
    assert not at.exception
    assert not [b for b in at.button if b.label in ("Approve", "Reject")]


def test_an_admin_forces_a_rollback_with_a_reason(
    app: Callable[..., AppTest], services: Services, tmp_path: Path
) -> None:
    seed_tenant(services, Scenario(tenant_id="acme", history_rows=300))
    first = install_model(services, "acme", tmp_path, ModelState.CHAMPION, seed=1)
    install_model(services, "acme", tmp_path, ModelState.CHAMPION, seed=2)
    at = app("admin", username="ada").run()
    button(at, "Force rollback to the previous champion").click().run()
    assert "reason" in at.error[0].value  # refused without a reason
    at.text_input(key="admin_reason").input("maize forecasts off after the update")
    button(at, "Force rollback to the previous champion").click().run()
    assert not at.exception, at.exception
    champion = services.registry.current(Principal.system("acme"), "acme", "yield", ModelState.CHAMPION)
    assert champion is not None and champion.id == first.id
    last = services.registry.audit_trail(ROOT, "acme", subject_id=first.id)[-1]
    assert last.actor == "ada" and "maize forecasts off" in last.details["reason"]
