"""The post-promotion watch on a real dev server: a champion promoted after a canary is watched against the one it
replaced, which keeps scoring the same requests. One that turns out worse on the next traffic is rolled back to the
previous champion (audited, notified, the reason names the watch); a good one is kept when the period ends; a watch
started by hand through the raw Temporal client for anything but a real promotion fails and moves nothing.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from dashboard import governance
from evolution.canary.watch_models import WatchInput, WatchResult, watch_workflow_id
from evolution.contracts import DriftScanInput, RetrainingInput, RolloutTiming, WatchPolicy
from evolution.demo.scenario import TrafficDriver
from evolution.demo.synthetic import DriftSpec
from evolution.lifecycle import ModelState, VersionView
from evolution.platform.wiring import Services
from evolution.security import Principal
from evolution.timeutil import utcnow
from tests.support.approvals import decide
from tests.support.histories import replay_and_keep
from tests.support.scenario import seed_tenant
from tests.workflows.test_lifecycle_end_to_end import (
    SCENARIO,
    TIMING,
    champion_and_drifted_traffic,
    drive_until_approval,
)
from tests.workflows.test_retraining_approval import wait_for_approval
from workers.orchestrator import TemporalOrchestrator

WATCH = WatchPolicy(min_s=4, min_labels=300, max_s=600, look_interval_s=0.5)
WATCHED = RolloutTiming(**{**TIMING.model_dump(), "watch": WATCH})
SYSTEM = Principal.system("acme")


async def promoted_after_a_canary(
    services: Services, orchestrator: TemporalOrchestrator
) -> tuple[VersionView, VersionView, TrafficDriver]:
    """v1 the bootstrap champion; drift; v2 wins the canary and is approved: (v1, v2, the traffic driver)."""
    first, driver = await champion_and_drifted_traffic(services, orchestrator)
    await asyncio.to_thread(driver.round, 1200)
    scan = await orchestrator.run_drift_scan(
        DriftScanInput(tenant_id="acme", model_name="yield", retraining_timing=WATCHED)
    )
    assert scan.retraining == "started", scan
    await drive_until_approval(orchestrator, driver)
    answer = await decide(services, orchestrator, "acme", reason="canary won")
    assert answer.final_state == "CHAMPION", answer
    assert (await orchestrator.retraining_result("acme")).outcome == "promoted"
    second = services.registry.current(SYSTEM, "acme", "yield", ModelState.CHAMPION)
    assert second is not None and second.number == first.number + 1
    return first, second, driver


async def watch_outcome(
    temporal_env: WorkflowEnvironment, driver: TrafficDriver, max_rounds: int = 60
) -> tuple[WatchResult, WorkflowHistory]:
    handle = temporal_env.client.get_workflow_handle(
        watch_workflow_id("acme", "yield"), result_type=WatchResult
    )
    for _ in range(max_rounds):
        description = await handle.describe()
        if description.status is not None and description.status.name != "RUNNING":
            break
        await asyncio.to_thread(driver.round)
        await asyncio.sleep(0.3)
    result = await handle.result()
    return result, await handle.fetch_history()


async def test_a_champion_worse_after_promotion_is_rolled_back_by_the_watch(
    services: Services, worker: None, orchestrator: TemporalOrchestrator, temporal_env: WorkflowEnvironment
) -> None:
    first, second, driver = await promoted_after_a_canary(services, orchestrator)
    # The season turns back: traffic is like the first champion's world again, where the new one is worse.
    driver.drift = DriftSpec(at=utcnow() + timedelta(days=3650))
    result, history = await watch_outcome(temporal_env, driver)

    assert result.status == "rolled_back", result
    assert result.q_harm < 0.05 and result.labels >= 200
    assert driver.roles.get("watch", 0) > 0  # the previous champion scored beside the champion
    champion = services.registry.current(SYSTEM, "acme", "yield", ModelState.CHAMPION)
    assert champion is not None and champion.id == first.id
    assert services.registry.get_version(SYSTEM, second.id).state == ModelState.DEPRECATED
    restored = services.registry.audit_trail(SYSTEM, "acme", subject_id=first.id)[-1]
    assert restored.to_state == "CHAMPION" and restored.actor == "system:watch"
    assert restored.details["reason"].startswith("post-promotion watch: harm test")
    assert restored.details["watch_rollback"] is True
    assert any(n["kind"] == "watch.rolled_back" for n in services.notifier.recent("acme"))
    (progress,) = services.watches.progress(SYSTEM, "acme", "yield")
    assert progress.status == "rolled_back" and progress.champion_number == second.number
    assert services.registry.verify_audit(SYSTEM, "acme").ok
    await replay_and_keep(history, "watch-rolled-back")


async def test_a_champion_as_good_after_promotion_is_kept_when_the_watch_ends(
    services: Services, worker: None, orchestrator: TemporalOrchestrator, temporal_env: WorkflowEnvironment
) -> None:
    _, second, driver = await promoted_after_a_canary(services, orchestrator)
    (watching,) = services.watches.progress(SYSTEM, "acme", "yield")
    assert watching.status == "watching" and "watched against" in watching.summary(utcnow())
    result, history = await watch_outcome(temporal_env, driver)

    assert result.status == "kept", result
    assert result.labels >= WATCH.min_labels and result.q_harm >= 0.05
    champion = services.registry.current(SYSTEM, "acme", "yield", ModelState.CHAMPION)
    assert champion is not None and champion.id == second.id
    (progress,) = services.watches.progress(SYSTEM, "acme", "yield")
    assert progress.status == "kept" and progress.ended_at is not None
    (row,) = governance.watch_rows(services, SYSTEM, "acme")  # the Governance page's table
    assert (row["status"], row["champion"], row["labels"]) == ("kept", f"v{second.number}", result.labels)
    assert any(n["kind"] == "watch.kept" for n in services.notifier.recent("acme"))
    await replay_and_keep(history, "watch-kept")


async def test_a_watch_started_by_hand_for_no_real_promotion_fails_and_rolls_nothing_back(
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    temporal_env: WorkflowEnvironment,
    task_queue: str,
) -> None:
    seed_tenant(services, SCENARIO)
    services.snapshots.seal(SYSTEM, "acme", utcnow())
    await orchestrator.start_retraining(
        RetrainingInput(tenant_id="acme", model_name="yield", trigger="bootstrap", timing=TIMING)
    )
    await wait_for_approval(orchestrator, "acme")
    await decide(services, orchestrator, "acme")
    first = services.registry.current(SYSTEM, "acme", "yield", ModelState.CHAMPION)
    assert first is not None
    forged = WatchInput(
        tenant_id="acme",
        model_name="yield",
        champion_version_id=first.id,
        previous_version_id=first.id,
        policy=WatchPolicy(min_s=1, min_labels=0, look_interval_s=0.1),
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await temporal_env.client.execute_workflow(
            "PostPromotionWatch", forged, id="watch/acme/forged", task_queue=task_queue
        )
    assert "is not a former champion" in str(failed.value.cause.cause)  # the start step's own error
    assert services.watches.progress(SYSTEM, "acme") == []
    champion = services.registry.current(SYSTEM, "acme", "yield", ModelState.CHAMPION)
    assert champion is not None and champion.id == first.id
