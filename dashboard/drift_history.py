"""Drift over time for the Drift page, read from the signed drift reports.

PSI and KL per feature, the thresholds in force, a feature's distribution, missing rates, the MAE trend, the
data-quality checks of each window (statistics.md 1b, kept apart from drift), and whether each report's signature and
digest verify.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from dashboard.formatting import bin_label, when
from evolution.drift.reports import DriftReportView
from evolution.errors import IntegrityViolation
from evolution.platform.wiring import Services
from evolution.security import Principal

HISTORY = 60
QUALITY_WINDOWS = 12  # windows whose data-quality checks the page lists, newest first

NOT_RUN = "data-quality checks not run for this window"
NO_RETRAINING = (
    "A data-quality alert does not start a retraining: retraining on broken data would teach the model the "
    "breakage. Fix the sensor or the feed first; the alert names the feature and what looks wrong."
)
QUALITY_INTRO = (
    "These checks look for broken data, not for a change in the weather or the fields: values outside the usual "
    "range (a faulty sensor or a unit change), more missing values than usual (a sensor or a feed dropping out), "
    "categories never seen before (renamed or misspelt), and stuck sensors repeating one value."
)
CHECK_WORDS = {
    "out_of_range": "values out of range",
    "missing_rate": "missing values",
    "unseen_categories": "new categories",
    "stuck": "stuck value",
}
STATUS_WORDS = {
    "alert": "data-quality alert",
    "ok": "ok",
    "insufficient_data": "too little data to judge",
    "not_measured": "not measured",
}


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
        rows.append({"bin": bin_label(label), "sample": "baseline", "share": b / base_total})
        rows.append({"bin": bin_label(label), "sample": "latest window", "share": w / window_total})
    return pd.DataFrame(rows)


def not_measured(item: DriftReportView) -> list[str]:
    """Features the drift scan does not measure (free text, identifiers), each with its reason in words."""
    return [
        f"{f['feature']} ({(f.get('reason') or 'no reason given').split(': ', 1)[-1]})"
        for f in item.report["result"]["features"]
        if f["status"] == "not_measured"
    ]


def missing_changes(item: DriftReportView) -> pd.DataFrame:
    """Missing shares in percent, largest change first (an empty window has no missing share: its change is
    blank)."""
    rows = []
    for f in item.report["result"]["features"]:
        base, window = f["baseline_missing_rate"], f.get("window_missing_rate")
        rows.append(
            {
                "feature": f["feature"],
                "baseline missing %": round(100 * base, 2),
                "window missing %": None if window is None else round(100 * window, 2),
                "change (points)": None if window is None else round(100 * (window - base), 2),
            }
        )
    return pd.DataFrame(rows).sort_values(
        "change (points)", key=lambda s: s.abs(), ascending=False, na_position="last"
    )


@dataclass(frozen=True)
class QualityFinding:
    """One data-quality check of one feature, in words."""

    feature: str
    check: str  # the reason code, e.g. out_of_range
    check_words: str  # e.g. "values out of range"
    status: str
    description: str  # the verdict in plain words, from the report
    counts: str  # "k of m", or "" when not counted
    p_adjusted: float | None


@dataclass(frozen=True)
class WindowQuality:
    """The data-quality checks of one window's report; ``level`` None when they were not run (an older report)."""

    report_id: str
    window_start: datetime
    window_end: datetime
    level: str | None
    alerts: list[QualityFinding] = field(default_factory=list)
    unjudged: list[QualityFinding] = field(default_factory=list)  # not measured or too little data
    ok: int = 0

    @property
    def title(self) -> str:
        span = f"{when(self.window_start).removesuffix(' UTC')} to {when(self.window_end)}"
        if self.level is None:
            return f"Window {span}: {NOT_RUN}"
        if self.alerts:
            names = ", ".join(dict.fromkeys(a.feature for a in self.alerts))
            return f"Window {span}: {len(self.alerts)} data-quality alert(s) on {names}"
        return f"Window {span}: no data-quality alert"


def _finding(check: dict[str, Any]) -> QualityFinding:
    k, m = check.get("k"), check.get("m")
    return QualityFinding(
        feature=check["feature"],
        check=check["check"],
        check_words=CHECK_WORDS.get(check["check"], check["check"]),
        status=check["status"],
        description=check["description"],
        counts="" if k is None or m is None else f"{k:,} of {m:,}",
        p_adjusted=check.get("p_adjusted"),
    )


def window_quality(item: DriftReportView) -> WindowQuality:
    quality = item.report["result"].get("quality")
    if quality is None:
        return WindowQuality(item.id, item.window_start, item.window_end, None)
    findings = [_finding(c) for c in quality["checks"]]
    return WindowQuality(
        item.id,
        item.window_start,
        item.window_end,
        quality["level"],
        alerts=[f for f in findings if f.status == "alert"],
        unjudged=[f for f in findings if f.status in ("not_measured", "insufficient_data")],
        ok=sum(f.status == "ok" for f in findings),
    )


def quality_by_window(items: list[DriftReportView], limit: int = QUALITY_WINDOWS) -> list[WindowQuality]:
    """The newest ``limit`` windows' data-quality checks, newest first."""
    return [window_quality(r) for r in reversed(items[-limit:])]


def findings_table(findings: list[QualityFinding]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "feature": f.feature,
                "check": f.check_words,
                "status": STATUS_WORDS.get(f.status, f.status),
                "what it means": f.description,
            }
            for f in findings
        ]
    )


def mae_trend(items: list[DriftReportView]) -> pd.DataFrame:
    rows = []
    for r in items:
        mae = r.report["result"].get("mae")
        if mae and mae.get("window_mae") is not None:
            rows.append(
                {"window end": r.window_end, "MAE": mae["window_mae"], "series": "champion on the window"}
            )
            rows.append(
                {"window end": r.window_end, "MAE": mae["baseline_mae"], "series": "champion's baseline"}
            )
    return pd.DataFrame(rows)


def verification(services: Services, items: list[DriftReportView]) -> pd.DataFrame:
    rows = []
    for r in reversed(items):
        try:
            services.drift_reports.verify(r, services.keyring)
            verdict = "signature and digest verify"
        except IntegrityViolation as failure:
            verdict = f"FAILED: {failure}"
        quality = r.report["result"].get("quality")
        rows.append(
            {
                "report": r.id,
                "window end (UTC)": when(r.window_end).removesuffix(" UTC"),
                "level": r.level,
                "data quality": quality["level"] if quality else "not run",
                "verification": verdict,
            }
        )
    return pd.DataFrame(rows)
