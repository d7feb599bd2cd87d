"""The Drift page lists each window's data-quality checks apart from drift, in words, and says when none were run."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import drift_history
from evolution.drift.reports import DriftReportView
from evolution.platform.wiring import Services
from evolution.stats.drift import DriftResult, build_baseline, scan
from evolution.timeutil import utcnow
from tests.dashboard.conftest import ROOT


def _broken_window() -> DriftResult:
    """A rain sensor writing 9999 for 5 % of rows (PSI still reads ok), a stuck soil-temperature sensor, a renamed
    soil category and a free-text column."""
    rng = np.random.default_rng(7)
    n, m = 4000, 1000
    base = {
        "rain_mm": rng.gamma(2.0, 12.0, n),
        "soil_temp": rng.normal(18.0, 3.0, n),
        "soil": rng.choice(["clay", "loam", "sand"], n).astype(object),
        "notes": np.array([f"visit {i}: {rng.integers(10**9)}" for i in range(n)], dtype=object),
    }
    rain = rng.gamma(2.0, 12.0, m)
    rain[rng.choice(m, m // 20, replace=False)] = 9999.0
    window = {
        "rain_mm": rain,
        "soil_temp": np.full(m, 21.5),
        "soil": rng.choice(["clay", "loam", "sandy soil"], m).astype(object),
        "notes": np.array([f"call {i}: {rng.integers(10**9)}" for i in range(m)], dtype=object),
    }
    return scan(build_baseline(base), window)


def _write(services: Services, result: DriftResult, hours_ago: int) -> DriftReportView:
    end = utcnow() - timedelta(hours=hours_ago)
    return services.drift_reports.write(
        ROOT,
        tenant_id="acme",
        model_name="yield",
        baseline_version_id="mv-none",
        baseline_model_hash=None,
        snapshot_id=f"snap-{hours_ago}",
        window_start=end - timedelta(hours=1),
        window_end=end,
        result=result,
    )


@pytest.fixture
def reports(services: Services) -> tuple[DriftReportView, DriftReportView]:
    services.tenants.ensure_tenant(ROOT, "acme")
    broken = _broken_window()
    assert broken.quality is not None and broken.features[0].status == "ok"
    old = _write(services, broken.model_copy(update={"quality": None}), hours_ago=2)  # made before the checks
    new = _write(services, broken, hours_ago=1)
    return old, new


def test_the_drift_page_lists_data_quality_alerts_per_window_apart_from_drift(
    app: Callable[..., AppTest], reports: tuple[DriftReportView, DriftReportView]
) -> None:
    old, new = reports
    at = app("viewer")
    at.run()
    at.switch_page("views/drift.py").run()
    assert not at.exception, at.exception
    assert "Data quality (separate from drift)" in [s.value for s in at.subheader]
    assert drift_history.NO_RETRAINING in [i.value for i in at.info]

    warnings = [w.value for w in at.warning]
    assert len(warnings) == 3 and all(w.startswith("**Data-quality alert** · ") for w in warnings)
    rain = next(w for w in warnings if "rain_mm" in w)
    assert re.match(
        r"\*\*Data-quality alert\*\* · rain_mm, values out of range: 5\.\d % of rain_mm values are above",
        rain,
    ), rain
    assert "the usual maximum of" in rain and "a faulty sensor or a unit change?" in rain
    assert any("soil_temp, stuck value: 100.0 % of soil_temp values" in w for w in warnings)
    assert any("soil, new categories:" in w and "'sandy soil'" in w for w in warnings)

    titles = [e.label for e in at.expander]
    assert titles[0].endswith("3 data-quality alert(s) on rain_mm, soil_temp, soil")
    assert titles[1].endswith(drift_history.NOT_RUN)
    assert any(f"Data-quality checks not run for this window (report {old.id}" in i.value for i in at.info)

    # A table with prose to read whole is an HTML table (dashboard/tables.py), a short one a grid: either.
    not_judged = next(d.value for d in [*at.dataframe, *at.table] if "what it means" in d.value.columns)
    row = not_judged[not_judged["feature"] == "notes"].iloc[0]
    assert row["status"] == "not measured" and "free text or an identifier" in row["what it means"]
    assert any(
        "Not measured for drift (no PSI or KL): notes (free text or identifiers" in c.value
        for c in at.caption
    )
    signed = next(d.value for d in at.dataframe if "verification" in d.value.columns)
    assert list(signed["data quality"]) == ["alert", "not run"] and new.level == "alert"


def test_a_report_without_any_quality_key_reads_as_not_run(
    reports: tuple[DriftReportView, DriftReportView],
) -> None:
    old, new = reports
    result = {k: v for k, v in new.report["result"].items() if k != "quality"}
    older = new.model_copy(update={"report": {**new.report, "result": result}})
    assert drift_history.window_quality(older).level is None
    assert drift_history.window_quality(old).level is None
    latest = drift_history.window_quality(new)
    assert latest.level == "alert" and [a.check for a in latest.alerts] == [
        "out_of_range",
        "stuck",
        "unseen_categories",
    ]
    assert re.fullmatch(r"5\d of 1,000", latest.alerts[0].counts)
    windows = drift_history.quality_by_window([old, new])
    assert [w.report_id for w in windows] == [new.id, old.id]


def test_missing_changes_and_psi_history_take_features_without_a_psi(
    reports: tuple[DriftReportView, DriftReportView],
) -> None:
    _, new = reports
    history = drift_history.psi_history([new])
    assert history.loc[history["feature"] == "notes", "PSI"].isna().all()
    feature = new.report["result"]["features"][0]
    empty = {**feature, "window_missing_rate": None, "m": 0}
    result = {**new.report["result"], "features": [empty, *new.report["result"]["features"][1:]]}
    view = new.model_copy(update={"report": {**new.report, "result": result}})
    changes = drift_history.missing_changes(view)
    assert changes.iloc[-1]["feature"] == feature["feature"] and changes["change (points)"].isna().iloc[-1]


def test_the_reserved_bins_read_other_and_missing(reports: tuple[DriftReportView, DriftReportView]) -> None:
    _, new = reports
    bins = set(drift_history.distribution(new, "rain_mm")["bin"]) | set(
        drift_history.distribution(new, "soil")["bin"]
    )
    assert {"other", "missing"} <= bins and not [b for b in bins if b.startswith("__")]
