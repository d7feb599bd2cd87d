"""The executive summary's figures and tables for the Executive page.

What each promotion earned against its cost, the capitalization index, quota, and SLA-breach risk.
"""

from __future__ import annotations

import httpx
import pandas as pd
import streamlit as st

from evolution.governance.economics import ExecutiveSummary
from evolution.platform.wiring import Services
from evolution.security import Principal

SCRAPE_TIMEOUT_S = 0.5
STATUS_TEXT = {"ok": "ok", "at_risk": "AT RISK", "breached": "BREACHED", "unknown": "unknown"}


def usd(amount: float) -> str:
    """Whole dollars, with a sign only when it is not a rounding of zero."""
    sign = "-" if amount <= -0.5 else ""
    return f"{sign}${abs(amount):,.0f}"


def measure(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ratio":
        return f"{value:.3%}"
    if value < 120:
        return f"{value:.1f} s"
    if value < 2 * 3600:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def serving_availability(services: Services) -> float | None:
    """The serving process measures its own availability; None when it cannot be reached right now."""
    url = f"http://{services.settings.serve_host}:{services.settings.serve_port}/metrics"
    try:
        text = httpx.get(url, timeout=SCRAPE_TIMEOUT_S).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("inference_availability_ratio "):
            return float(line.split()[1])
    return None


@st.cache_data(ttl=30, show_spinner=False)
def _summary(_services: Services, principal_json: str, tenant_id: str, model_name: str) -> ExecutiveSummary:
    principal = Principal.model_validate_json(principal_json)
    return _services.economics.executive_summary(
        principal,
        tenant_id,
        model_name=model_name,
        availability=serving_availability(_services),
    )


def summary(services: Services, principal: Principal, tenant_id: str, model_name: str) -> ExecutiveSummary:
    """Cached for 30 s per principal, tenant and model: the queries behind it scan predictions and outcomes."""
    return _summary(services, principal.model_dump_json(), tenant_id, model_name)


def promotions_frame(view: ExecutiveSummary) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "version": f"v{p.version}",
                "promoted": p.promoted_at.isoformat(timespec="minutes"),
                "by": p.promoted_by,
                "error reduction": p.error_reduction,
                "measured on": f"{p.labelled_requests} ({p.error_source})",
                "forecasts served": p.volume,
                "value $": round(p.value_usd, 2),
                "cost $": round(p.cost_usd, 2),
                "net $": round(p.net_value_usd, 2),
                "ROI": None if p.roi is None else round(p.roi, 2),
            }
            for p in view.promotions
        ]
    )


def capitalization_frame(view: ExecutiveSummary) -> pd.DataFrame:
    return pd.DataFrame([p.model_dump() for p in view.capitalization.series])


def slo_frame(view: ExecutiveSummary) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "objective": s.title,
                "target": s.objective,
                "status": STATUS_TEXT[s.status],
                "worst": measure(s.worst, s.unit),
                "latest": measure(s.latest, s.unit),
                "observations": s.observations,
                "breaches": s.breaches,
                "detail": s.detail,
            }
            for s in view.slos
        ]
    )
