"""What the demo leaves behind for the dashboard, as data: plausible economics and the windows of a season.

A demo runs for minutes, so without these its Executive page would credit a fortune to a few thousand forecasts and
its Drift page would show one dot: the tenant's economics are set to a scale that fits a demo (docs/economics.md),
and the history the tenant arrives with is cut into back-to-back windows, each scanned against the first champion's
baseline (a season of calm before the injected drift). evolution/cli/demo_season.py applies them.
"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Any

# $0.04 per t/ha of error avoided per forecast and $1.00 per 1,000 forecasts: the demo's few thousand forecasts
# earn and cost tens of dollars, not tens of thousands (docs/economics.md, "The demo's figures").
DEMO_ECONOMICS: dict[str, Any] = {
    "value_per_unit_error_usd": 0.04,
    "serving_cost_per_1k_usd": 1.00,
    "target_unit": "t/ha",
}
SEASON_WINDOWS = 12


def season_windows(
    start: datetime, end: datetime, count: int = SEASON_WINDOWS
) -> list[tuple[datetime, datetime]]:
    """``count`` back-to-back windows from ``start`` to ``end`` (the last one ends exactly at ``end``)."""
    step = (end - start) / count
    edges = [start + step * k for k in range(count)] + [end]
    return list(pairwise(edges))
