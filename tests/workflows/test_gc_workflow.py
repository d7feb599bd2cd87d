"""The daily ``gc/{tenant}`` schedule on a real Temporal dev server, and the GarbageCollection workflow it starts.

The tenant's history is the GC scenario of tests/support/retention_world.py (ten versions, three collectable).
The recorded history (histories/gc-scheduled.json) is replayed with every other recorded history by
tests/workflows/test_replay.py.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from temporalio.client import (
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
)
from temporalio.testing import WorkflowEnvironment

from evolution.contracts import GcInput, GcResult
from evolution.platform.wiring import Services
from evolution.registry.versions import ModelRegistryService
from tests.support.histories import replay_and_keep
from tests.support.retention_world import COLLECTED, DELETED, Clock, World, build_world
from workers.orchestrator import TemporalOrchestrator
from workflows.gc import GcWorkflow


def world_in(services: Services, work: Path) -> World:
    clock = Clock()
    return build_world(services, ModelRegistryService(services.factory, clock=clock), clock, work)


async def scheduled_run(temporal_env: WorkflowEnvironment, schedule_id: str) -> str:
    """Trigger the schedule now and return the id of the workflow it started."""
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


async def test_ensure_gc_schedule_creates_one_daily_schedule_that_skips_overlaps(
    temporal_env: WorkflowEnvironment, orchestrator: TemporalOrchestrator, task_queue: str
) -> None:
    first = await orchestrator.ensure_gc_schedule("acme")
    again = await orchestrator.ensure_gc_schedule("acme")  # idempotent: no error, same schedule
    handle = temporal_env.client.get_schedule_handle(first)
    try:
        assert first == again == "gc/acme"
        described = await handle.describe()
        assert [i.every for i in described.schedule.spec.intervals] == [timedelta(hours=24)]
        assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert (action.workflow, action.task_queue) == ("GarbageCollection", task_queue)
        sent = await temporal_env.client.data_converter.decode(action.args, [GcInput])  # type: ignore[arg-type]
        assert sent == [GcInput(tenant_id="acme")]  # every model, really collecting
    finally:
        await handle.delete()


async def test_the_scheduled_workflow_collects_what_the_plan_said(
    temporal_env: WorkflowEnvironment,
    services: Services,
    worker: None,
    orchestrator: TemporalOrchestrator,
    task_queue: str,
    tmp_path: Path,
) -> None:
    world = world_in(services, tmp_path)
    plan = services.retention.plan(world.system, world.tenant)
    assert sorted(v.number for v in plan.decided("collect")) == list(COLLECTED)
    before = world.digests()

    dry = await temporal_env.client.execute_workflow(
        GcWorkflow.run,
        GcInput(tenant_id=world.tenant, dry_run=True),
        id=f"gc/{world.tenant}/dry-run",
        task_queue=task_queue,
    )
    assert world.digests() == before and world.gc_rows() == []
    assert dry.dry_run and dry.artifacts_deleted == DELETED

    schedule_id = await orchestrator.ensure_gc_schedule(world.tenant)
    try:
        workflow_id = await scheduled_run(temporal_env, schedule_id)
    finally:
        await temporal_env.client.get_schedule_handle(schedule_id).delete()
    run = temporal_env.client.get_workflow_handle(workflow_id, result_type=GcResult)
    result = await run.result()

    assert result.collected == dry.collected == [v.version_id for v in plan.decided("collect")]
    assert before - world.digests() == {e.digest for e in plan.entries}
    assert (result.artifacts_deleted, result.bytes_deleted) == (DELETED, plan.totals.bytes_deleted)
    assert (result.versions_kept, result.bytes_kept) == (plan.totals.versions_kept, plan.totals.bytes_kept)
    assert [r.subject_id for r in world.gc_rows()] == result.collected
    assert result.errors == [] and result.left_alone == [] and result.deferred is None

    history = await run.fetch_history()
    assert (
        history.events[0].workflow_execution_started_event_attributes.workflow_type.name
        == "GarbageCollection"
    )
    await replay_and_keep(history, "gc-scheduled")

    # The figure for the README: what the daily run removed and what it kept, in this scenario.
    t = plan.totals
    print(
        "\nGC of the test scenario (10 versions of one model):\n"
        f"| collected | {t.versions_collected} versions | {t.artifacts_deleted} artifacts | {t.bytes_deleted:,} bytes |\n"
        f"| kept      | {t.versions_kept} versions | {len(plan.spared)} shared artifacts spared | "
        f"{t.bytes_kept:,} bytes |"
    )

    second = await temporal_env.client.execute_workflow(
        GcWorkflow.run, GcInput(tenant_id=world.tenant), id=f"gc/{world.tenant}/again", task_queue=task_queue
    )
    assert second.collected == [] and second.artifacts_deleted == 0 and len(world.gc_rows()) == len(COLLECTED)
