"""The worker's candidate builder runs at most ``max_concurrent_trainings`` jobs at once, and charges each attempt
for its job's run time only, not for its wait for a slot.

The compute backend here is a stand-in (the layer under test is the builder): each job holds its resources for a
while and fails, which the builder charges like any attempt. (Heartbeats while waiting: tests/unit/test_training_slots.py.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from evolution.demo.scenario import Scenario
from evolution.errors import TrainingFailed
from evolution.platform.settings import Settings
from evolution.platform.wiring import build_services
from evolution.registry.db import tenant_session
from evolution.registry.schema import TrainingRun
from evolution.security import Principal
from evolution.timeutil import utcnow
from evolution.training.compute import Heartbeat, TrainingJob, TrainingJobResult
from tests.support.scenario import seed_tenant

HELD_S = 0.4
TENANTS = ["acme", "bravo", "carla"]


class HoldsThenFails:
    def __init__(self) -> None:
        self.running = 0
        self.peak = 0

    async def run(self, job: TrainingJob, heartbeat: Heartbeat | None = None) -> TrainingJobResult:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(HELD_S)
        finally:
            self.running -= 1
        return TrainingJobResult(job_id=job.job_id, status="failed", duration_s=HELD_S, error="no model")

    async def cancel(self, job_id: str) -> None:
        return None


async def test_one_slot_runs_the_jobs_one_by_one_and_charges_none_of_the_waiting(tmp_path: Path) -> None:
    services = build_services(Settings(home=tmp_path / "home", max_concurrent_trainings=1))
    try:
        for tenant in TENANTS:
            seed_tenant(services, Scenario(tenant_id=tenant, history_rows=300))
            services.snapshots.seal(Principal.system(tenant), tenant, utcnow())
        compute = HoldsThenFails()
        builder = services.candidate_builder(compute)  # what the worker's training activities are built with

        async def attempt(tenant: str) -> None:
            with pytest.raises(TrainingFailed, match="no model"):
                await builder.train(tenant, "yield", f"v-{tenant}", 1, f"run-{tenant}")

        await asyncio.wait_for(asyncio.gather(*(attempt(t) for t in TENANTS)), timeout=60)

        assert compute.peak == 1
        for tenant in TENANTS:
            with tenant_session(services.factory, tenant) as session:
                [charged] = session.scalars(
                    sa.select(TrainingRun.duration_s).where(TrainingRun.tenant_id == tenant)
                ).all()
            # The last one waited two jobs' time for its slot; each is charged about one job's run.
            assert HELD_S <= charged < 2 * HELD_S, (tenant, charged)
    finally:
        services.close()
