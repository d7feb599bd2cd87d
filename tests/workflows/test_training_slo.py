"""SLO: a training run over its limit is cancelled, its job killed, the candidate failed and an alert raised."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from evolution.contracts import RetrainingInput, RolloutTiming
from evolution.demo.scenario import Scenario
from evolution.lifecycle import ModelState
from evolution.platform.wiring import Services
from evolution.security import Principal
from evolution.timeutil import utcnow
from evolution.training.local_backend import LocalSubprocessBackend
from tests.support.scenario import seed_tenant
from workers.orchestrator import TemporalOrchestrator
from workers.worker import build_worker

HANGING_TRAINER = '#!/bin/sh\necho $$ > "{pid_file}"\nexec sleep 600\n'


@pytest.fixture
def pid_file(tmp_path: Path) -> Path:
    return tmp_path / "trainer.pid"


@pytest.fixture
async def hanging_worker(
    temporal_env: WorkflowEnvironment, services: Services, task_queue: str, pid_file: Path, tmp_path: Path
) -> AsyncIterator[None]:
    # The real subprocess backend, with an interpreter that never finishes: a training that overruns.
    fake_python = tmp_path / "python"
    fake_python.write_text(HANGING_TRAINER.format(pid_file=pid_file))
    fake_python.chmod(0o755)
    backend = LocalSubprocessBackend(str(fake_python), heartbeat_interval_s=0.5)
    with ThreadPoolExecutor(max_workers=8) as executor:
        async with build_worker(
            temporal_env.client, services, task_queue, executor, compute=backend, max_cached_workflows=0
        ):
            yield


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_overrunning_training_is_cancelled_killed_failed_and_alerted(
    services: Services, hanging_worker: None, orchestrator: TemporalOrchestrator, pid_file: Path
) -> None:
    seed_tenant(services, Scenario(tenant_id="acme", history_rows=400))
    services.snapshots.seal(Principal.system("acme"), "acme", utcnow())
    timing = RolloutTiming(training_timeout_s=6.0)
    await orchestrator.start_retraining(RetrainingInput(tenant_id="acme", model_name="yield", timing=timing))
    for _ in range(300):  # the overrunning job has started
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.1)
    pid = int(pid_file.read_text())
    assert alive(pid)
    result = await asyncio.wait_for(orchestrator.retraining_result("acme"), timeout=60)
    assert result.outcome == "failed" and "limit and was cancelled" in result.reason
    version = services.registry.get_version(Principal.system("acme"), result.version_id or "")
    assert version.state == ModelState.FAILED
    alerts = [n for n in services.notifier.recent("acme") if n["kind"] == "slo.retraining_duration"]
    assert alerts and alerts[0]["severity"] == "critical"
    for _ in range(100):
        if not alive(pid):
            break
        await asyncio.sleep(0.1)
    assert not alive(pid), "the overrunning training job is still running"
