"""What the demo leaves behind for the dashboard: plausible economics and a season of drift history.

A demo runs for minutes, so without these its Executive page would credit a fortune to a few thousand forecasts and
its Drift page would show one dot: the tenant's economics are set to a scale that fits a demo (docs/economics.md),
the history the tenant arrives with is scanned window by window against the first champion's baseline (a season of
calm before the injected drift), and after the new champion has served, its first window is scanned too.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from evolution.drift.reports import DriftReportView
from evolution.errors import EvolutionError
from evolution.platform.orchestrator import Orchestrator
from evolution.platform.wiring import Services
from evolution.security import Principal

# $0.04 per t/ha of error avoided per forecast and $1.00 per 1,000 forecasts: the demo's few thousand forecasts
# earn and cost tens of dollars, not tens of thousands (docs/economics.md, "The demo's figures").
DEMO_ECONOMICS: dict[str, Any] = {
    "value_per_unit_error_usd": 0.04,
    "serving_cost_per_1k_usd": 1.00,
    "target_unit": "t/ha",
}
SEASON_WINDOWS = 12


def set_demo_economics(services: Services, admin: Principal, tenant_id: str) -> None:
    services.tenants.configure_tenant(admin, tenant_id, {"economics": DEMO_ECONOMICS})


def season_windows(
    start: datetime, end: datetime, count: int = SEASON_WINDOWS
) -> list[tuple[datetime, datetime]]:
    """``count`` back-to-back windows from ``start`` to ``end`` (the last one ends exactly at ``end``)."""
    step = (end - start) / count
    edges = [start + step * k for k in range(count)] + [end]
    return list(pairwise(edges))


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
