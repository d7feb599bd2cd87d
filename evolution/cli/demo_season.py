"""`evolution demo`'s history for the dashboard: its economics, a season of drift reports before the drift, and a
scan of the new champion's first window after the promotion (the data is in evolution/demo/season.py)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from evolution.demo.season import DEMO_ECONOMICS, season_windows
from evolution.drift.reports import DriftReportView
from evolution.errors import EvolutionError
from evolution.platform.orchestrator import Orchestrator
from evolution.platform.wiring import Services
from evolution.security import Principal


def set_demo_economics(services: Services, admin: Principal, tenant_id: str) -> None:
    services.tenants.configure_tenant(admin, tenant_id, {"economics": DEMO_ECONOMICS})


def backfill_season(
    services: Services, tenant_id: str, model_name: str, snapshot_id: str, history_days: int, end: datetime
) -> list[str]:
    """Drift reports over the ``history_days`` before ``end`` (the history the tenant arrived with), against the
    champion's baseline; their ids."""
    return services.drift_scanner.scan_past_windows(
        tenant_id, model_name, snapshot_id, season_windows(end - timedelta(days=history_days), end)
    )


async def scan_after_promotion(
    services: Services, orchestrator: Orchestrator, admin: Principal, tenant_id: str, since: datetime
) -> DriftReportView:
    """The scheduled scan, run now: it seals the new champion's first window and compares it with its baseline."""
    await orchestrator.trigger_drift_scan(tenant_id)
    for _ in range(240):
        reports = services.drift_reports.list_reports(admin, tenant_id, limit=1)
        if reports and reports[0].created_at_time() >= since:
            return reports[0]
        await asyncio.sleep(0.5)
    raise EvolutionError("the drift scan after the promotion wrote no report in time")
