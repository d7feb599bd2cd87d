from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from tests.support.temporal import temporal_cli_path
from workers.orchestrator import TemporalOrchestrator
from workers.worker import build_worker


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    # In memory (no database file): persistence is not under test here, and it is about twice as fast.
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(), data_converter=pydantic_data_converter, ui=False
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = build_services(Settings(home=tmp_path / "home", canary_share=0.5, training_memory_limit_mb=None))
    yield svc
    svc.close()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex}"


@pytest.fixture
async def worker(
    temporal_env: WorkflowEnvironment, services: Services, task_queue: str
) -> AsyncIterator[None]:
    with ThreadPoolExecutor(max_workers=16) as executor:
        async with build_worker(temporal_env.client, services, task_queue, executor, max_cached_workflows=0):
            try:
                yield
            finally:
                await terminate_leftovers(temporal_env.client, task_queue)


async def terminate_leftovers(client: Client, task_queue: str) -> None:
    """A test that failed half-way leaves its run (``retrain/acme``) open; the next test would find the id taken.
    A schedule left behind (``drift-scan/acme``) would start its workflows on this test's task queue, which no worker
    serves any more, and a later test's "create if missing" would keep it: both go."""
    query = f'TaskQueue = "{task_queue}" AND ExecutionStatus = "Running"'
    async for execution in client.list_workflows(query):
        with contextlib.suppress(RPCError):  # it ended meanwhile
            await client.get_workflow_handle(execution.id, run_id=execution.run_id).terminate(
                reason="test teardown: left running"
            )
    async for listed in await client.list_schedules():
        with contextlib.suppress(RPCError):  # deleted meanwhile
            await client.get_schedule_handle(listed.id).delete()


@pytest.fixture
def orchestrator(temporal_env: WorkflowEnvironment, task_queue: str) -> TemporalOrchestrator:
    return TemporalOrchestrator(temporal_env.client, task_queue)
