"""Executive: ROI of each promotion, the capitalization index, GPU-hours and budget, SLA-breach risk."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard import auth, executive_figures, governance
from evolution.security import Role

page = auth.page_context()
services, tenant, principal = page.services, page.tenant, page.principal
if principal.role not in (Role.MANAGER, Role.ADMIN):
    st.error("The executive view is for managers and administrators.")
    st.stop()

st.title(f"Executive · {tenant}")
models = governance.model_names(services, principal, tenant)
if not models:
    st.info("No model yet.")
    st.stop()
model_name = st.selectbox("Model line", models, key="executive_model")
view = executive_figures.summary(services, principal, tenant, model_name)
unit = view.economics.target_unit

cap = view.capitalization
cols = st.columns(4)
cols[0].metric("Capitalization (net value)", executive_figures.usd(cap.net_value_usd))
cols[1].metric("Capitalization index", "—" if cap.index is None else f"{cap.index:,.0f}")
cols[2].metric("GPU-hours this month", f"{view.quota.gpu_hours_used:.2f} / {view.quota.gpu_hours_quota:g}")
cols[3].metric(
    "Budget this month",
    f"${view.quota.budget_used_usd:,.2f} / {executive_figures.usd(view.quota.budget_cap_usd)}",
)
st.caption(cap.definition)

st.subheader("SLA-breach risk")
st.caption(view.slo_status_rule)
st.dataframe(executive_figures.slo_frame(view), hide_index=True, width="stretch")

st.subheader("Promotions: value against cost")
st.caption(
    f"Value = error reduction ({unit} per forecast) × ${view.economics.value_per_unit_error_usd:g} per {unit} × "
    f"forecasts served; cost = training + ${view.economics.serving_cost_per_1k_usd:g} per 1,000 forecasts."
)
st.dataframe(executive_figures.promotions_frame(view), hide_index=True, width="stretch")

series = executive_figures.capitalization_frame(view)
if not series.empty:
    st.subheader("Capitalization over time")
    st.altair_chart(
        alt.Chart(series).mark_line(point=True).encode(x="at:T", y="net_value_usd:Q"),
        width="stretch",
    )
