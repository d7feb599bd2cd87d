"""Drift over time for the Drift page, read from the signed drift reports.

PSI and KL per feature, the thresholds in force, a feature's distribution, missing rates, the MAE trend, and
whether each report's signature and digest verify.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from evolution.drift.reports import DriftReportView
from evolution.errors import IntegrityViolation
from evolution.platform.wiring import Services
from evolution.security import Principal

HISTORY = 60


def reports(services: Services, principal: Principal, tenant_id: str) -> list[DriftReportView]:
    """The latest reports, oldest first."""
    return list(reversed(services.drift_reports.list_reports(principal, tenant_id, limit=HISTORY)))


def psi_history(items: list[DriftReportView]) -> pd.DataFrame:
    rows = [
        {
            "window end": r.window_end,
            "feature": f["feature"],
            "PSI": f.get("psi"),
            "KL(current‖baseline)": f.get("kl"),
            "status": f["status"],
        }
        for r in items
        for f in r.report["result"]["features"]
    ]
    return pd.DataFrame(rows)


def thresholds(item: DriftReportView) -> dict[str, float]:
    config = item.report["thresholds"]
    return {
        "warn": float(config["warn_psi"]),
        "alert": float(config["alert_psi"]),
        "alpha": float(config["alpha"]),
    }


def features(item: DriftReportView) -> list[str]:
    return [f["feature"] for f in item.report["result"]["features"]]


def distribution(item: DriftReportView, feature: str) -> pd.DataFrame:
    """Shares per bin in the baseline and in the window (bins frozen with the baseline)."""
    found = next(f for f in item.report["result"]["features"] if f["feature"] == feature)
    base, window = found["baseline_counts"], found["window_counts"]
    base_total, window_total = max(sum(base), 1), max(sum(window), 1)
    rows: list[dict[str, Any]] = []
    for label, b, w in zip(found["bin_labels"], base, window, strict=True):
        rows.append({"bin": label, "sample": "baseline", "share": b / base_total})
        rows.append({"bin": label, "sample": "window", "share": w / window_total})
    return pd.DataFrame(rows)


def missing_changes(item: DriftReportView) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "feature": f["feature"],
                "baseline missing": f["baseline_missing_rate"],
                "window missing": f["window_missing_rate"],
                "change": f["window_missing_rate"] - f["baseline_missing_rate"],
            }
            for f in item.report["result"]["features"]
        ]
    ).sort_values("change", key=lambda s: s.abs(), ascending=False)


def mae_trend(items: list[DriftReportView]) -> pd.DataFrame:
    rows = []
    for r in items:
        mae = r.report["result"].get("mae")
        if mae and mae.get("window_mae") is not None:
            rows.append({"window end": r.window_end, "MAE": mae["window_mae"], "series": "window"})
            rows.append({"window end": r.window_end, "MAE": mae["baseline_mae"], "series": "baseline"})
    return pd.DataFrame(rows)


def verification(services: Services, items: list[DriftReportView]) -> pd.DataFrame:
    rows = []
    for r in reversed(items):
        try:
            services.drift_reports.verify(r, services.keyring)
            verdict = "signature and digest verify"
        except IntegrityViolation as failure:
            verdict = f"FAILED: {failure}"
        rows.append({"report": r.id, "window end": r.window_end, "level": r.level, "verification": verdict})
    return pd.DataFrame(rows)
