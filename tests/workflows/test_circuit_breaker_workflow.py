"""RetrainingWorkflow's gates on a real Temporal dev server: the circuit breaker and the quota.

Three failing retrainings open the breaker and the fourth ends CIRCUIT_OPEN without training; an admin's reset lets
the next one train (and its measured time is charged). An exhausted quota ends a start with BLOCK_RETRAINING,
audited and notified; the quota is checked again before a training retry, which it blocks once the first attempt's
measured time used it up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from evolution.cli.next_step import next_step
from evolution.contracts import DriftScanInput, RetrainingInput, RetrainingResult, RolloutTiming
from evolution.demo.scenario import Scenario
from evolution.notifications.outbox import OutboxNotifier
from evolution.observability import metrics
from evolution.platform.wiring import Services
from evolution.registry.circuit_breaker import CircuitBreaker
from evolution.registry.db import reading
from evolution.registry.quota import PRICE_PER_GPU_HOUR_USD
from evolution.registry.schema import TrainingRun
from evolution.security import Principal, Role
from evolution.timeutil import utcnow
from evolution.training.compute import Heartbeat, TrainingJob, TrainingJobResult
from evolution.training.local_backend import LocalSubprocessBackend
from tests.support.histories import replay_and_keep
from tests.support.scenario import seed_tenant
from tests.workflows.test_lifecycle_end_to_end import champion_and_drifted_traffic
from workers.orchestrator import TemporalOrchestrator
from workers.worker import build_worker
from workflows.drift_scan import drift_scan_schedule_id
from workflows.retraining import retraining_workflow_id

SCENARIO = Scenario(tenant_id="acme", history_rows=600)
FAST = RolloutTiming(look_interval_s=0.5, approval_timeout_s=1)
ADMIN = Principal.for_tenant("root", Role.ADMIN, "acme")


async def retrain(orchestrator: TemporalOrchestrator) -> RetrainingResult:
    await orchestrator.start_retraining(RetrainingInput(tenant_id="acme", model_name="yield", timing=FAST))
    return await orchestrator.retraining_result("acme")


def audited(services: Services, action: str) -> list[dict[str, object]]:
    return [e.details for e in services.registry.audit_trail(ADMIN, "acme") if e.action == action]


def notifications(services: Services) -> list[dict[str, Any]]:
    return OutboxNotifier(services.factory).recent("acme")  # the outbox every notifier writes first


def training_runs(services: Services) -> list[TrainingRun]:
    with reading(services.factory, "acme") as session:
        return list(session.scalars(select(TrainingRun).order_by(TrainingRun.started_at)))


async def keep_history(temporal_env: WorkflowEnvironment, name: str) -> None:
    """Replay the run just finished; with EVOLUTION_RECORD_HISTORIES, keep it as a recorded history."""
    history: WorkflowHistory = await temporal_env.client.get_workflow_handle(
        retraining_workflow_id("acme")
    ).fetch_history()
    await replay_and_keep(history, name)


async def test_three_failed_retrainings_open_the_breaker_until_an_admin_resets_it(
    services: Services, worker: None, orchestrator: TemporalOrchestrator, temporal_env: WorkflowEnvironment
) -> None:
    seed_tenant(services, SCENARIO)  # no sealed snapshot yet: every training fails (InsufficientData)
    failures = [await retrain(orchestrator) for _ in range(3)]
    assert [r.outcome for r in failures] == ["failed"] * 3
    assert all("no sealed snapshot" in r.reason and r.final_state == "FAILED" for r in failures)
    # `evolution status` shows the failed step's error type and, from it, what to do next.
    shown = await orchestrator.retraining_status("acme")
    assert shown is not None and shown.message.startswith("failed: InsufficientData: "), shown
    assert (next_step("acme", shown.model_name, shown.message) or "").startswith(
        "seal a snapshot: evolution snapshot seal --tenant acme"
    )
    breaker = CircuitBreaker(services.factory)
    status = breaker.status(ADMIN, "acme")
    assert (status.state, status.consecutive_failures) == ("open", 3)
    assert audited(services, "breaker.opened")[0]["consecutive_failures"] == 3
    notes = notifications(services)
    assert notes[0]["kind"] == "retraining.blocked.circuit_open" and notes[0]["severity"] == "critical"

    services.snapshots.seal(Principal.system("acme"), "acme", utcnow())  # data fixed, breaker still open
    blocked = await retrain(orchestrator)
    assert blocked.outcome == "blocked" and blocked.blocked_by == "CIRCUIT_OPEN"
    assert blocked.reason.startswith("CIRCUIT_OPEN:") and blocked.version_id is None
    assert len(services.registry.list_versions(ADMIN, "acme", "yield")) == 3  # nothing registered or trained
    assert training_runs(services) == []
    assert audited(services, "retraining.blocked")[-1]["code"] == "CIRCUIT_OPEN"
    assert notifications(services)[0]["kind"] == "retraining.blocked"
    assert breaker.status(ADMIN, "acme").consecutive_failures == 3  # a blocked start is not a run
    await keep_history(temporal_env, "retraining-circuit-open")

    breaker.reset(ADMIN, "acme", "snapshot sealed; training data available again")
    trained = await retrain(orchestrator)
    assert trained.outcome == "approval_timeout" and trained.final_state == "FAILED"
    status = breaker.status(ADMIN, "acme")
    assert (status.state, status.consecutive_failures, status.last_outcome) == (
        "closed",
        0,
        "approval_timeout",
    )
    [run] = training_runs(services)
    assert run.outcome == "succeeded" and run.duration_s > 0
    assert run.gpu_hours == pytest.approx(
        run.duration_s / 3600 * 0.25
    )  # CPU-only: a quarter GPU-hour per hour
    assert run.cost_usd == pytest.approx(run.gpu_hours * PRICE_PER_GPU_HOUR_USD)
    print(
        f"\n[figure] breaker: 3 failed retrainings -> open; 1 start blocked (CIRCUIT_OPEN, 0 trainings); "
        f"after reset 1 trained in {run.duration_s:.2f} s, charged {run.gpu_hours:.6f} GPU-h = ${run.cost_usd:.6f}"
    )


async def test_an_exhausted_quota_blocks_the_start_audited_and_notified(
    services: Services, worker: None, orchestrator: TemporalOrchestrator, temporal_env: WorkflowEnvironment
) -> None:
    seed_tenant(services, SCENARIO)
    services.tenants.set_quota(ADMIN, "acme", gpu_hours_quota=0.0, reason="test: exhausted")
    result = await retrain(orchestrator)
    assert result.outcome == "blocked" and result.blocked_by == "BLOCK_RETRAINING"
    assert result.reason.startswith("BLOCK_RETRAINING: 0.00 of 0.00 GPU-hours")
    [block] = audited(services, "retraining.blocked")
    assert block["code"] == "BLOCK_RETRAINING" and block["reason"] == result.reason
    note = notifications(services)[0]
    assert note["kind"] == "retraining.blocked" and "BLOCK_RETRAINING" in note["subject"]
    assert CircuitBreaker(services.factory).status(ADMIN, "acme").consecutive_failures == 0
    await keep_history(temporal_env, "retraining-quota-blocked")

    services.tenants.set_quota(ADMIN, "acme", gpu_hours_quota=100.0, reason="new month's allowance")
    after_raise = await retrain(orchestrator)  # past the gate (it then fails: no snapshot sealed)
    assert after_raise.outcome == "failed" and after_raise.blocked_by is None
    assert [a["after"] for a in audited(services, "tenant.quota_set")] == [
        {"gpu_hours_quota": 0.0, "budget_cap_usd": 500.0},
        {"gpu_hours_quota": 100.0, "budget_cap_usd": 500.0},
    ]


class NodeLostOnce:
    """The local backend, except that the first job's node is lost after it held its resources a while."""

    def __init__(self, held_s: float) -> None:
        self._inner = LocalSubprocessBackend()
        self._held_s = held_s
        self.calls = 0

    async def run(self, job: TrainingJob, heartbeat: Heartbeat | None = None) -> TrainingJobResult:
        self.calls += 1
        if self.calls == 1:
            await asyncio.sleep(self._held_s)
            raise ConnectionError("training node lost")  # not a domain error: Temporal retries the attempt
        return await self._inner.run(job, heartbeat)

    async def cancel(self, job_id: str) -> None:
        await self._inner.cancel(job_id)


@pytest.fixture
def flaky_compute() -> NodeLostOnce:
    return NodeLostOnce(held_s=0.3)


@pytest.fixture
async def flaky_worker(
    temporal_env: WorkflowEnvironment, services: Services, task_queue: str, flaky_compute: NodeLostOnce
) -> AsyncIterator[None]:
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with build_worker(
            temporal_env.client, services, task_queue, executor, compute=flaky_compute, max_cached_workflows=0
        ):
            yield


async def test_the_quota_is_checked_again_before_a_training_retry(
    services: Services, flaky_worker: None, orchestrator: TemporalOrchestrator, flaky_compute: NodeLostOnce
) -> None:
    seed_tenant(services, SCENARIO)
    services.snapshots.seal(Principal.system("acme"), "acme", utcnow())
    # Room for 3.6 ms of CPU time: the start passes, the lost first attempt (0.3 s, charged) uses it all up.
    services.tenants.set_quota(ADMIN, "acme", gpu_hours_quota=0.001 / 3600)
    result = await retrain(orchestrator)
    assert result.outcome == "blocked" and result.blocked_by == "BLOCK_RETRAINING", result
    assert result.final_state == "FAILED" and "GPU-hours used" in result.reason
    assert flaky_compute.calls == 1  # the retry never started a job
    [run] = training_runs(services)
    assert run.outcome == "error" and run.duration_s >= 0.3
    assert audited(services, "retraining.blocked")[0]["code"] == "BLOCK_RETRAINING"
    assert CircuitBreaker(services.factory).status(ADMIN, "acme").consecutive_failures == 0
    print(
        f"\n[figure] quota: lost attempt charged {run.duration_s:.2f} s = {run.gpu_hours * 3600:.4f} GPU-s; "
        "retry blocked before starting a job (1 of 2 attempts ran)"
    )


async def test_a_drift_alert_while_the_breaker_is_open_notifies_instead_of_starting_a_retraining(
    services: Services, worker: None, orchestrator: TemporalOrchestrator, temporal_env: WorkflowEnvironment
) -> None:
    _, driver = await champion_and_drifted_traffic(services, orchestrator)
    await asyncio.to_thread(driver.round, 1200)
    breaker = CircuitBreaker(services.factory)
    for run in range(3):
        breaker.record(Principal.system("acme"), "acme", f"run-{run}", "failed", "trainer crashed")
    assert breaker.status(ADMIN, "acme").state == "open"
    assert metrics.CIRCUIT_BREAKER_OPEN.labels("acme")._value.get() == 1  # the gauge the alert rule reads

    scan = await orchestrator.run_drift_scan(DriftScanInput(tenant_id="acme", model_name="yield"))
    assert scan.level == "alert" and scan.retraining == "circuit_open", scan
    status = await orchestrator.retraining_status("acme")
    assert status is not None and status.phase == "finished"  # still the bootstrap run: nothing new started
    (blocked,) = audited(services, "retraining.blocked")
    assert (
        blocked["code"] == "CIRCUIT_OPEN"
        and "retraining disabled by the circuit breaker" in blocked["reason"]
    )
    told = [n for n in notifications(services) if n["kind"] == "retraining.blocked"]
    assert told and "retraining disabled by the circuit breaker" in told[0]["subject"]
    history = await temporal_env.client.get_workflow_handle(
        f"{drift_scan_schedule_id('acme')}/manual"
    ).fetch_history()
    await replay_and_keep(history, "drift-scan-circuit-open")
