"""The drift-scan load run, short: a dozen tenants scanned through a real dev server and a real `evolution worker`.

The long run with figures is bench/bench_drift_load.py (500 tenants x 10,000 rows x 20 features). Here: every
tenant's scan completes with a signed report over its whole window, through exactly one DriftScanWorkflow per
tenant, and the shortcuts of the seeding are shown to store what the real paths would. No timing is asserted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from evolution.data.sources import load_source_key, records_to_events
from evolution.lifecycle import ModelState
from evolution.platform.settings import Settings
from evolution.platform.wiring import Services, build_services
from evolution.security import Principal
from tests.support.load_seed import (
    ADMIN,
    SOURCE,
    LoadSeeder,
    LoadStack,
    LoadTenant,
    connect_when_healthy,
    run_scans,
    train_on_snapshot,
)

pytestmark = pytest.mark.slow

TENANTS = 8
ROWS = 2000
FEATURES = 20


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    svc = build_services(Settings(home=tmp_path / "home", training_memory_limit_mb=None))
    yield svc
    svc.close()


def test_every_tenant_is_scanned_once_with_a_signed_report_of_its_whole_window(
    services: Services, tmp_path: Path
) -> None:
    seeder = LoadSeeder(services, rows=ROWS, features=FEATURES, history_rows=600, seed=11)
    tenants = seeder.seed_tenants([f"load-{i:05d}" for i in range(TENANTS)])
    assert seeder.model is not None and len(seeder.model.config.features) == FEATURES
    _seeding_stores_what_the_real_paths_would(services, seeder, tenants)

    with LoadStack(services.settings, tmp_path / "stack") as stack:
        outcomes, _, server_cpu, worker_cpu, _ = asyncio.run(
            run_scans(stack, [t.tenant_id for t in tenants], seeder.model_name, concurrency=4)
        )
        workflow_ids = asyncio.run(_drift_scan_workflows(stack))
    assert server_cpu > 0 and worker_cpu > 0  # the figures the bench prints are read from live processes

    assert [o.tenant_id for o in outcomes] == [t.tenant_id for t in tenants]
    assert sorted(workflow_ids) == sorted(f"drift-scan/{t.tenant_id}/manual" for t in tenants)
    for tenant, outcome in zip(tenants, outcomes, strict=True):
        system = Principal.system(tenant.tenant_id)
        assert outcome.result.report_id is not None, outcome.result
        assert outcome.result.level in ("ok", "warn", "alert")
        # auto_retrain is off (the load is the scan alone): an alert says so instead of starting a retraining
        assert outcome.result.retraining == ("disabled" if outcome.result.level == "alert" else "not_needed")
        [report] = services.drift_reports.list_reports(system, tenant.tenant_id)
        services.drift_reports.verify(report, services.keyring)
        assert report.id == outcome.result.report_id
        assert report.report["baseline"]["model_version_id"] == tenant.champion.id
        snapshot = services.snapshots.get(system, outcome.result.snapshot_id or "")
        assert snapshot.row_count == ROWS and snapshot.window_start == seeder.window_start
        champion = services.registry.current(system, tenant.tenant_id, seeder.model_name, ModelState.CHAMPION)
        assert champion is not None and champion.id == tenant.champion.id
    drifted = [o.result.level for t, o in zip(tenants, outcomes, strict=True) if t.drifted]
    assert drifted and all(level == "alert" for level in drifted)


def _seeding_stores_what_the_real_paths_would(
    services: Services, seeder: LoadSeeder, tenants: list[LoadTenant]
) -> None:
    """One training serves every tenant: training on another tenant's snapshot gives the same files; and the
    bulk-inserted events are exactly what the ingestor stores for the signed events (all duplicates)."""
    assert seeder.model is not None
    other = services.snapshots.get(Principal.system(tenants[1].tenant_id), tenants[1].training_snapshot_id)
    _, retrained = train_on_snapshot(services, other, seeder.seed, services.settings.work_dir / "again")
    assert retrained.file_digests == seeder.model.file_digests

    tenant = tenants[1]
    key_id, private_pem = load_source_key(services.settings.keys_dir, tenant.tenant_id, SOURCE)
    records = seeder.window_records(1, tenant.drifted)
    events = records_to_events(
        records, tenant.tenant_id, key_id, private_pem, target="yield_t_ha", request_prefix="win"
    )
    summary = services.events.ingest_objects(ADMIN, tenant.tenant_id, list(events), "test")
    assert (summary.accepted, summary.duplicate, summary.rejected) == (0, ROWS, 0), summary.rejects[:3]


async def _drift_scan_workflows(stack: LoadStack) -> list[str]:
    settings = stack.settings.model_copy(update={"temporal_address": stack.address})
    client = await connect_when_healthy(settings)
    return [w.id async for w in client.list_workflows("WorkflowType = 'DriftScanWorkflow'")]
