"""SHAP attributions for the Explainability page.

Global importance for the champion and the candidate, a forecast's waterfall, and attribution drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from evolution.lifecycle import ModelState
from evolution.platform.wiring import Services
from evolution.security import Principal
from evolution.training.explain import (
    Explanation,
    Waterfall,
    compare_attributions,
    global_importance,
    shap_values,
    waterfall,
)
from evolution.training.loader import LoadedModel

CANDIDATE_STATES = (ModelState.SHADOW, ModelState.CANARY)
PAGE_ROWS = 250  # exact TreeSHAP costs about 1 ms a row; a sample keeps the page under 2 s


@dataclass(frozen=True)
class Subjects:
    champion: LoadedModel | None
    candidate: LoadedModel | None
    window_rows: list[dict[str, Any]]
    baseline_rows: list[dict[str, Any]]
    window_id: str = ""
    baseline_id: str = ""


def subjects(services: Services, principal: Principal, tenant_id: str, model_name: str) -> Subjects:
    """The verified champion and candidate, the latest window's rows and the champion's training rows."""
    current = {
        v.state: v
        for v in services.registry.in_states(
            principal, tenant_id, model_name, (ModelState.CHAMPION, *CANDIDATE_STATES)
        )
    }
    champion_view = current.get(ModelState.CHAMPION)
    candidate_view = current.get(ModelState.CANARY) or current.get(ModelState.SHADOW)
    champion = services.loader.load(champion_view) if champion_view else None
    candidate = services.loader.load(candidate_view) if candidate_view else None
    latest = services.snapshots.latest(principal, tenant_id)
    window = services.snapshots.load_rows(latest, services.keyring) if latest else []
    baseline: list[dict[str, Any]] = []
    baseline_id = ""
    if champion_view and champion_view.dataset_snapshot_id:
        trained_on = services.snapshots.get(principal, champion_view.dataset_snapshot_id)
        baseline = services.snapshots.load_rows(trained_on, services.keyring)
        baseline_id = trained_on.id
    return Subjects(champion, candidate, window, baseline, latest.id if latest else "", baseline_id)


@st.cache_resource(show_spinner=False, max_entries=16)
def _explained(
    _model: LoadedModel, model_hash: str, _rows: list[dict[str, Any]], rows_id: str
) -> Explanation:
    """Explanations are pure functions of (model, snapshot): cached by the model hash and the snapshot id."""
    return shap_values(_model.model, _rows, max_rows=PAGE_ROWS)


def explained(model: LoadedModel, rows: list[dict[str, Any]], rows_id: str) -> Explanation:
    return _explained(model, model.model_hash, rows, rows_id)


def importance(model: LoadedModel, rows: list[dict[str, Any]], rows_id: str, label: str) -> pd.DataFrame:
    ranked = global_importance(explained(model, rows, rows_id))
    return pd.DataFrame([{"feature": f, "mean |SHAP|": v, "model": label} for f, v in ranked])


def fields(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({str(r["field_id"]) for r in rows if r.get("field_id") is not None})


def forecast_waterfall(model: LoadedModel, rows: list[dict[str, Any]], field_id: str) -> Waterfall:
    """The latest forecast for one field, decomposed feature by feature."""
    latest = [r for r in rows if str(r.get("field_id")) == field_id][-1:]
    return waterfall(shap_values(model.model, latest), 0)


def waterfall_frame(chart: Waterfall) -> pd.DataFrame:
    rows = [{"step": "average forecast", "contribution": chart.base_value, "value": ""}]
    rows += [
        {"step": c.feature, "contribution": c.shap, "value": "" if c.value is None else str(c.value)}
        for c in chart.contributions
    ]
    return pd.DataFrame(rows)


def drift_frame(model: LoadedModel, subjects: Subjects) -> pd.DataFrame:
    """Attribution drift from the cached explanations of the training snapshot and of the latest window."""
    shifts = compare_attributions(
        explained(model, subjects.baseline_rows, subjects.baseline_id),
        explained(model, subjects.window_rows, subjects.window_id),
    )
    return pd.DataFrame([s.model_dump() for s in shifts])
