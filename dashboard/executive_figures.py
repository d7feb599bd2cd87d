"""The executive summary's figures and tables for the Executive page.

What each promotion earned against its cost, the capitalization index, quota, and SLA-breach risk.
"""

from __future__ import annotations

from dataclasses import dataclass

import altair as alt
import httpx
import pandas as pd
import streamlit as st

from dashboard.formatting import money, percent, span, time_x, when
from evolution.governance.economics import ROI_DEFINITION, ExecutiveSummary
from evolution.platform.wiring import Services
from evolution.security import Principal

SCRAPE_TIMEOUT_S = 0.5
STATUS_TEXT = {"ok": "ok", "at_risk": "AT RISK", "breached": "BREACHED", "unknown": "unknown"}


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


PROMOTION_COLUMNS = {
    "promoted (UTC)": "When the version first became champion.",
    "replaced": "The champion it replaced; its error is the one compared with.",
    "error reduction": "Replaced version's MAE − this version's MAE per forecast, in the target's unit.",
    "measured on": "Labelled requests both versions scored (or held-out rows) that measured the reduction.",
    "forecasts served": "Forecasts the version answered while champion (canary traffic not counted).",
    "value": "Error reduction × value of one unit of error × forecasts served (USD).",
    "training": "What its training runs were charged (USD): the budget's figure for them.",
    "serving": "Forecasts served ÷ 1,000 × the serving price (USD); not charged to the budget.",
    "net": "Value − training − serving (USD).",
    "ROI": ROI_DEFINITION,
}


@dataclass(frozen=True)
class Figure:
    label: str
    value: str
    help: str


@dataclass(frozen=True)
class Headline:
    period: str
    line: list[Figure]
    budget: list[Figure]


def headline(view: ExecutiveSummary) -> Headline:
    """The page's headline figures, each with its unit, period and definition (shown on hover)."""
    cap, quota = view.capitalization, view.quota
    if cap.period_start is None:
        period = "No champion yet: value and cost start to count from the line's first champion."
        over = "since the first champion"
    else:
        period = (
            f"Period: {span(cap.period_start, cap.period_end)}, from the line's first champion to now. "
            "Amounts in USD."
        )
        over = f"over {span(cap.period_start, cap.period_end)}"
    line = [
        Figure(
            "Capitalization (net value)",
            money(cap.net_value_usd),
            f"Value delivered − cost of the model line, USD, {over}.",
        ),
        Figure(
            "Capitalization index",
            "—" if cap.index is None else f"{cap.index:,.1f}",
            f"100 × value delivered ÷ cost, {over}. 100 = break-even; 250 = $2.50 back per dollar spent. "
            "See 'How the capitalization index is defined' below and docs/economics.md.",
        ),
        Figure(
            "Value delivered",
            money(cap.value_usd),
            "Sum over promotions of error reduction × value of a unit of error × forecasts served as champion "
            f"(USD, {over}).",
        ),
        Figure(
            "Cost",
            money(cap.cost_usd),
            f"Training {money(cap.training_cost_usd)} (every run, {money(cap.unpromoted_training_cost_usd)} of it "
            f"for versions never promoted) + serving {money(cap.serving_cost_usd)}; USD, {over}.",
        ),
    ]
    budget = [
        Figure(
            f"GPU-hours used (quota {quota.gpu_hours_quota:g})",
            f"{quota.gpu_hours_used:,.3f}",
            f"GPU-hours charged for training runs started in {quota.month} (calendar month, UTC), against the "
            "tenant's monthly quota. A CPU-only run is charged a fraction of its wall hours.",
        ),
        Figure(
            f"Training spend (budget {money(quota.budget_cap_usd)})",
            money(quota.budget_used_usd),
            f"USD charged for training runs started in {quota.month} (UTC), against the monthly budget. "
            "Serving is not charged to the budget.",
        ),
        Figure(
            "Budget used",
            percent(quota.budget_share),
            f"Training spend ÷ monthly budget, {quota.month}. Retraining is blocked at 100 %.",
        ),
        Figure(
            "Retraining",
            "blocked" if quota.blocked_reason else "allowed",
            quota.blocked_reason or "Neither the GPU-hour quota nor the budget is used up this month.",
        ),
    ]
    return Headline(period, line, budget)


def promotions_caption(view: ExecutiveSummary) -> str:
    e = view.economics
    return (
        f"Value = error reduction ({e.target_unit} per forecast) × ${e.value_per_unit_error_usd:g} per {e.target_unit} "
        f"× forecasts served while champion; cost = its training runs + ${e.serving_cost_per_1k_usd:g} per 1,000 "
        "forecasts served. ROI = (value − cost) ÷ cost. Amounts in USD; hover a column's header for its definition."
    )


def promotions_frame(view: ExecutiveSummary) -> pd.DataFrame:
    unit = view.economics.target_unit
    return pd.DataFrame(
        [
            {
                "version": f"v{p.version}",
                "promoted (UTC)": when(p.promoted_at).removesuffix(" UTC"),
                "value": money(p.value_usd),
                "training": money(p.training_cost_usd),
                "serving": money(p.serving_cost_usd),
                "net": money(p.net_value_usd),
                "ROI": "—" if p.roi_percent is None else f"{p.roi_percent:,.1f} %",
                "error reduction": "not measured"
                if p.error_reduction is None
                else f"{p.error_reduction:.3f} {unit}",
                "forecasts served": f"{p.volume:,}",
                "measured on": f"{p.labelled_requests:,} ({p.error_source.replace('_', ' ')})",
                "replaced": "—" if p.predecessor is None else f"v{p.predecessor}",
                "by": p.promoted_by,
            }
            for p in view.promotions
        ]
    )


def capitalization_frame(view: ExecutiveSummary) -> pd.DataFrame:
    return pd.DataFrame([p.model_dump() for p in view.capitalization.series])


def capitalization_chart(series: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(series)
        .mark_line(point=True)
        .encode(
            x=time_x("at"),
            y=alt.Y("net_value_usd:Q", title="net value (USD)"),
            tooltip=[
                alt.Tooltip("at:T", title="time (UTC)", format="%Y-%m-%d %H:%M:%S"),
                alt.Tooltip("value_usd:Q", title="value (USD)", format=",.2f"),
                alt.Tooltip("cost_usd:Q", title="cost (USD)", format=",.4f"),
                alt.Tooltip("index:Q", title="capitalization index", format=",.1f"),
            ],
        )
    )


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
