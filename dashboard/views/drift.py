"""Drift: PSI and KL per feature over time, the data-quality checks per window (apart from drift), a feature's
distribution, missing rates, the MAE trend, verification."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard import auth, drift_history

page = auth.page_context()
services, tenant, principal = page.services, page.tenant, page.principal

st.title(f"Drift · {tenant}")
items = drift_history.reports(services, principal, tenant)
if not items:
    st.info("No drift report yet: the hourly drift-scan schedule writes one per sealed window.")
    st.stop()
latest = items[-1]
limits = drift_history.thresholds(latest)
st.caption(
    f"Warn when PSI ≥ {limits['warn']} and significant; alert when PSI ≥ {limits['alert']} "
    f"(χ² test, Benjamini–Hochberg, α = {limits['alpha']}). KL is KL(current‖baseline)."
)

history = drift_history.psi_history(items)
psi = alt.Chart(history).mark_line(point=True).encode(x="window end:T", y="PSI:Q", color="feature:N")
rules = (
    alt.Chart(
        {"values": [{"level": "warn", "PSI": limits["warn"]}, {"level": "alert", "PSI": limits["alert"]}]}
    )
    .mark_rule(strokeDash=[4, 4])
    .encode(y="PSI:Q", color=alt.value("red"))
)
st.subheader("PSI per feature over time")
st.altair_chart(psi + rules, width="stretch")
st.subheader("KL(current‖baseline) per feature over time")
st.altair_chart(
    alt.Chart(history)
    .mark_line(point=True)
    .encode(x="window end:T", y="KL(current‖baseline):Q", color="feature:N"),
    width="stretch",
)
unmeasured = drift_history.not_measured(latest)
if unmeasured:
    st.caption(f"Not measured for drift (no PSI or KL): {'; '.join(unmeasured)}.")

st.divider()
st.subheader("Data quality (separate from drift)")
st.caption(drift_history.QUALITY_INTRO)
st.info(drift_history.NO_RETRAINING)
windows = drift_history.quality_by_window(items)
for i, window in enumerate(windows):
    with st.expander(window.title, expanded=i == 0 or bool(window.alerts)):
        if window.level is None:
            st.info(f"{drift_history.NOT_RUN.capitalize()} (report {window.report_id} was made before them).")
            continue
        for alert in window.alerts:
            st.warning(f"**Data-quality alert** · {alert.feature}, {alert.check_words}: {alert.description}")
        if not window.alerts:
            st.success(f"No data-quality alert: {window.ok} check(s) ok.")
        if window.unjudged:
            st.caption("Not judged in this window:")
            st.dataframe(drift_history.findings_table(window.unjudged), hide_index=True, width="stretch")
if len(items) > len(windows):
    st.caption(f"The newest {len(windows)} windows are listed.")
st.divider()

st.subheader("Distribution: baseline vs latest window")
feature = st.selectbox("Feature", drift_history.features(latest), key="drift_feature")
st.altair_chart(
    alt.Chart(drift_history.distribution(latest, feature))
    .mark_bar()
    .encode(x=alt.X("bin:N", sort=None), xOffset="sample:N", y="share:Q", color="sample:N"),
    width="stretch",
)

st.subheader("Missing-rate changes (latest window)")
st.dataframe(drift_history.missing_changes(latest), hide_index=True, width="stretch")

mae = drift_history.mae_trend(items)
if not mae.empty:
    st.subheader("Champion MAE: window vs baseline")
    st.altair_chart(
        alt.Chart(mae).mark_line(point=True).encode(x="window end:T", y="MAE:Q", color="series:N"),
        width="stretch",
    )

st.subheader("Signed reports")
st.dataframe(drift_history.verification(services, items), hide_index=True, width="stretch")
