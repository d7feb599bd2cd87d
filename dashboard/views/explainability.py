"""Explainability: which features drive the champion's and the candidate's forecasts, and how that changed."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import auth, charts, governance, shap_attributions, tables

page = auth.page_context()
services, tenant, principal = page.services, page.tenant, page.principal

st.title(f"Explainability · {tenant}")
models = governance.model_names(services, principal, tenant)
if not models:
    st.info("No model yet.")
    st.stop()
model_name = st.selectbox("Model", models, key="explain_model")
subjects = shap_attributions.subjects(services, principal, tenant, model_name)
if subjects.champion is None or not subjects.window_rows:
    st.info("Explanations need a champion and a sealed window of data.")
    st.stop()
labels = {f"champion v{subjects.champion.number}": subjects.champion}
if subjects.candidate is not None:
    labels[f"candidate v{subjects.candidate.number}"] = subjects.candidate
st.caption(
    "SHAP values on the latest sealed window (models are verified before they are loaded). A built-in model is "
    "explained exactly (TreeSHAP); any other model by an estimate from sampled feature orderings, whose sample sizes "
    "are given here."
)
for label, loaded in labels.items():
    st.caption(shap_attributions.method_note(loaded, subjects, label))

st.subheader("Global importance")
frames = [
    shap_attributions.importance(loaded, subjects.window_rows, subjects.window_id, label, subjects)
    for label, loaded in labels.items()
]
importance = pd.concat(frames, ignore_index=True)
st.caption(
    "Mean absolute SHAP value per feature on the latest window: how much it moves a forecast, on average."
)
st.altair_chart(
    charts.bars(
        importance,
        "feature",
        "mean |SHAP|",
        category_title="feature",
        value_title="mean |SHAP| (target unit)",
        colour="model",
    ),
    width="stretch",
)

st.subheader("One forecast, feature by feature")
fields = shap_attributions.fields(subjects.window_rows)
if fields:
    field_col, model_col = st.columns(2)
    field_id = field_col.selectbox("Field", fields, key="explain_field")
    which = model_col.radio("Model", list(labels), key="explain_which", horizontal=True)
    chart, exact = shap_attributions.forecast_waterfall(
        labels[which], subjects.window_rows, field_id, subjects
    )
    st.write(
        f"Forecast **{chart.prediction:.2f}** = average {chart.base_value:.2f} + the contributions below"
        + ("" if exact else " (estimated contributions)")
    )
    st.altair_chart(
        charts.bars(
            shap_attributions.waterfall_frame(chart),
            "step",
            "contribution",
            category_title="step",
            value_title="contribution to the forecast (target unit)",
            sort=None,
        ),
        width="stretch",
    )

st.subheader("Attribution drift: the champion's baseline vs the latest window")
if not subjects.baseline_rows:
    st.write("The champion's baseline snapshot is not available.")
elif subjects.window_is_baseline:
    st.info(
        "No window has been sealed since the champion's baseline (the data it was trained on): the latest window "
        "is that baseline, so there is nothing newer to compare yet. The next drift scan seals one."
    )
else:
    st.caption(
        f"Baseline: snapshot {subjects.baseline_id} (the champion's drift baseline); latest window: snapshot "
        f"{subjects.window_id}. A feature is flagged when its own shift exceeds 0.03 of the baseline's total."
    )
    if subjects.champion.model.format != "builtin":
        st.caption(
            "The champion's attributions are estimates on both sides: a small shift may be sampling noise."
        )
    tables.show(
        shap_attributions.drift_frame(subjects.champion, subjects), help=shap_attributions.DRIFT_COLUMNS
    )
