"""Drift: PSI and KL per feature over time, the data-quality checks per window (apart from drift), a feature's
distribution, missing rates, the MAE trend, verification."""

from __future__ import annotations

import streamlit as st

from dashboard import auth, charts, drift_history, tables
from dashboard.formatting import span

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
st.caption(
    f"{len(items)} signed drift report{'s' if len(items) != 1 else ''}, windows from {span(items[0].window_start, latest.window_end)}; each point "
    "is one window compared with the baseline of the champion at the time (the data it was trained on)."
)
st.subheader("PSI per feature over time")
st.altair_chart(
    charts.psi_over_time(history, {"warn": limits["warn"], "alert": limits["alert"]}), width="stretch"
)
st.subheader("KL(current‖baseline) per feature over time")
st.altair_chart(
    charts.lines_over_time(
        history,
        "window end",
        "KL(current‖baseline)",
        "feature",
        time_title="window end (UTC)",
        value_title="KL divergence (nats)",
    ),
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
            tables.show(drift_history.findings_table(window.unjudged), wrap=["what it means"])
if len(items) > len(windows):
    st.caption(f"The newest {len(windows)} windows are listed.")
st.divider()

st.subheader("Distribution: baseline vs latest window")
st.caption(
    f"Latest window: {span(latest.window_start, latest.window_end)}. Bins are frozen with the baseline."
)
feature = st.selectbox("Feature", drift_history.features(latest), key="drift_feature")
st.altair_chart(charts.shares_by_bin(drift_history.distribution(latest, feature), feature), width="stretch")

st.subheader("Missing-rate changes (latest window)")
st.caption("Share of rows with the feature missing, in percent; the change is in percentage points.")
tables.show(drift_history.missing_changes(latest))

mae = drift_history.mae_trend(items)
if not mae.empty:
    st.subheader("Champion MAE: window vs baseline")
    st.caption(
        "Mean absolute error of the champion's forecasts, in the target's unit, on each window's labelled rows."
    )
    st.altair_chart(
        charts.lines_over_time(
            mae, "window end", "MAE", "series", time_title="window end (UTC)", value_title="MAE (target unit)"
        ),
        width="stretch",
    )

st.subheader("Signed reports")
tables.show(drift_history.verification(services, items), wrap=["verification"])
