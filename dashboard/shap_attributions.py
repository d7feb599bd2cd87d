"""SHAP attributions for the Explainability page.

Global importance for the champion and the candidate, a forecast's waterfall, and attribution drift. A built-in model
is explained exactly (TreeSHAP); any other (ONNX) by a sampling estimate, which the page labels as such with its
sample sizes (:func:`method_note`). An estimate needs a background: the champion's training snapshot when it is
available (the reference TreeSHAP's averages come from too), else the latest window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from evolution.lifecycle import ModelState, VersionView
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

    @property
    def window_is_baseline(self) -> bool:
        """No window has been sealed since the champion's baseline: there is nothing newer to compare with."""
        return bool(self.baseline_id) and self.baseline_id == self.window_id

    @property
    def background(self) -> tuple[list[dict[str, Any]], str]:
        """The rows an estimate is measured against, and their snapshot id (for the cache)."""
        if self.baseline_rows:
            return self.baseline_rows, self.baseline_id
        return self.window_rows, self.window_id


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
    baseline_id = baseline_snapshot_id(services, champion_view) or ""
    if baseline_id:
        if latest is not None and baseline_id == latest.id:
            baseline = window
        else:
            baseline = services.snapshots.load_rows(
                services.snapshots.get(principal, baseline_id), services.keyring
            )
    return Subjects(champion, candidate, window, baseline, latest.id if latest else "", baseline_id)


def baseline_snapshot_id(services: Services, champion: VersionView | None) -> str | None:
    """The snapshot of the champion's drift baseline: an admin's signed reset if one is in force, else the data the
    champion was trained on (the same source the drift scan compares each window with)."""
    if champion is None:
        return None
    reset = services.baselines.effective_source(
        champion.tenant_id, champion.model_name, champion.id, services.keyring
    )
    return reset[1] if reset is not None else champion.dataset_snapshot_id


@st.cache_resource(show_spinner=False, max_entries=16)
def _explained(
    _model: LoadedModel,
    model_hash: str,
    _rows: list[dict[str, Any]],
    rows_id: str,
    _background: list[dict[str, Any]],
    background_id: str,
) -> Explanation:
    """Explanations are pure functions of (model, snapshot, background): cached by the model hash and snapshot ids."""
    return shap_values(_model.model, _rows, max_rows=PAGE_ROWS, background=_background)


def explained(
    model: LoadedModel, rows: list[dict[str, Any]], rows_id: str, subjects: Subjects
) -> Explanation:
    background, background_id = subjects.background
    return _explained(model, model.model_hash, rows, rows_id, background, background_id)


def importance(
    model: LoadedModel, rows: list[dict[str, Any]], rows_id: str, label: str, subjects: Subjects
) -> pd.DataFrame:
    ranked = global_importance(explained(model, rows, rows_id, subjects))
    return pd.DataFrame([{"feature": f, "mean |SHAP|": v, "model": label} for f, v in ranked])


def method_note(model: LoadedModel, subjects: Subjects, label: str) -> str:
    """How the page's values for ``model`` on the latest window were computed: exact, or an estimate and its sizes."""
    explanation = explained(model, subjects.window_rows, subjects.window_id, subjects)
    return f"{label} ({model.model.format}): {explanation.method}"


def fields(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({str(r["field_id"]) for r in rows if r.get("field_id") is not None})


def forecast_waterfall(
    model: LoadedModel, rows: list[dict[str, Any]], field_id: str, subjects: Subjects
) -> tuple[Waterfall, bool]:
    """The latest forecast for one field, decomposed feature by feature, and whether that is exact."""
    latest = [r for r in rows if str(r.get("field_id")) == field_id][-1:]
    explanation = shap_values(model.model, latest, background=subjects.background[0])
    return waterfall(explanation, 0), explanation.exact


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
        explained(model, subjects.baseline_rows, subjects.baseline_id, subjects),
        explained(model, subjects.window_rows, subjects.window_id, subjects),
    )
    return pd.DataFrame(
        [
            {
                "feature": s.feature,
                "baseline |SHAP|": round(s.baseline_mean_abs, 4),
                "window |SHAP|": round(s.window_mean_abs, 4),
                "baseline %": round(100 * s.baseline_share, 1),
                "window %": round(100 * s.window_share, 1),
                "shift": round(s.shift, 4),
                "flagged": "yes" if s.flagged else "",
            }
            for s in shifts
        ]
    )


DRIFT_COLUMNS = {
    "baseline |SHAP|": "Mean absolute SHAP value on the champion's baseline rows, in the target's unit.",
    "window |SHAP|": "Mean absolute SHAP value on the latest window's rows, in the target's unit.",
    "baseline %": "The feature's share of all attribution on the baseline, in percent.",
    "window %": "The feature's share of all attribution on the latest window, in percent.",
    "shift": "The feature's own change, net of the change common to all features, in units of the baseline's "
    "total attribution; flagged beyond ±0.03.",
}
