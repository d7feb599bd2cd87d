"""Executive: ROI of each promotion, the capitalization index, GPU-hours and budget, SLA-breach risk."""

from __future__ import annotations

import streamlit as st

from dashboard import auth, executive_figures, governance, tables
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
figures = executive_figures.headline(view)

st.subheader("Value against cost")
st.caption(figures.period)
cols = st.columns(4)
for column, figure in zip(cols, figures.line, strict=True):
    column.metric(figure.label, figure.value, help=figure.help)
st.subheader(f"Training budget and quota, {view.quota.month}")
cols = st.columns(4)
for column, figure in zip(cols, figures.budget, strict=True):
    column.metric(figure.label, figure.value, help=figure.help)
st.caption(view.quota.definition)
with st.expander("How the capitalization index is defined"):
    st.markdown(view.capitalization.definition)

st.subheader("Promotions: value against cost")
st.caption(executive_figures.promotions_caption(view))
tables.show(executive_figures.promotions_frame(view), help=executive_figures.PROMOTION_COLUMNS)

series = executive_figures.capitalization_frame(view)
if not series.empty:
    st.subheader("Capitalization over time")
    st.caption(
        "Net value (value delivered − cost, USD) of the model line at each instant of the period, from the first "
        "champion to now; each promotion is a point."
    )
    st.altair_chart(executive_figures.capitalization_chart(series), width="stretch")

st.subheader("SLA-breach risk")
st.caption(f"{view.slo_status_rule} Period: the last {view.slo_period_days:g} days.")
tables.show(executive_figures.slo_frame(view), wrap=["detail"])
