"""The layout checks catch what the issue saw (a cut "CANARY → C", an unlabelled threshold line, a time axis in the
browser's zone) and pass the dashboard's own tables and charts; the formatting they rely on, in words."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from streamlit.testing.v1 import AppTest

from dashboard.formatting import bin_label, money, percent, when
from dashboard.governance import canary_outcome, canary_progress
from evolution.contracts import RetrainingStatus
from evolution.stats.canary_models import Decision
from tests.dashboard.layout import chart_problems, table_problems


def careless_page() -> None:
    import altair as alt
    import pandas as pd
    import streamlit as st

    changes = pd.DataFrame(
        [{"seq": 1, "change": "CANARY → CHAMPION", "reason": "canary significantly better"}]
    )
    st.dataframe(changes, column_config={"change": st.column_config.Column(width=75)}, hide_index=True)
    times = pd.DataFrame([{"at": pd.Timestamp("2026-12-07 19:26", tz="UTC"), "psi": 0.1}])
    line = alt.Chart(times).mark_line().encode(x="at:T", y="psi:Q")
    rule = alt.Chart(pd.DataFrame([{"psi": 0.25}])).mark_rule().encode(y="psi:Q")
    st.altair_chart(line + rule)


def careful_page() -> None:
    import pandas as pd

    from dashboard import charts, tables

    changes = pd.DataFrame(
        [{"seq": 1, "change": "CANARY → CHAMPION", "reason": "canary significantly better " * 8}]
    )
    tables.show(changes, wrap=["reason"])
    history = pd.DataFrame(
        [{"window end": pd.Timestamp("2026-12-07 19:26", tz="UTC"), "PSI": 0.1, "feature": "x"}]
    )
    st_chart = charts.psi_over_time(history, {"warn": 0.1, "alert": 0.25})
    import streamlit as st

    st.altair_chart(st_chart)


def test_a_careless_page_fails_the_layout_checks_for_each_fault() -> None:
    at = AppTest.from_function(careless_page, default_timeout=30).run()
    tables = table_problems(at)
    assert "table 1, column 'change': value 'CANARY → CHAMPION'… cut at 75 px" in tables
    assert "table 1, column 'seq': no width set, so the grid may cut it" in tables
    charts = chart_problems(at)
    assert "chart 1: a threshold line without a label" in charts
    assert (
        "chart 1: the x axis (at) has no title" in charts and "chart 1: the time axis is not in UTC" in charts
    )


def test_the_dashboards_tables_and_charts_pass_them() -> None:
    at = AppTest.from_function(careful_page, default_timeout=30).run()
    assert not at.exception, at.exception
    assert table_problems(at) == [] and chart_problems(at) == []
    assert (
        not at.dataframe and "canary significantly better" in at.table[0].value.iloc[0]["reason"]
    )  # read whole


def test_times_money_and_bins_read_as_people_write_them() -> None:
    evening = datetime(2026, 12, 7, 21, 26, 3, 863000, tzinfo=timezone(timedelta(hours=2)))
    assert (
        when(evening) == "2026-12-07 19:26 UTC" and when(evening, seconds=True) == "2026-12-07 19:26:03 UTC"
    )
    assert [money(x) for x in (25514.2, 0.89, 0.0052, 0.0, -24.0, None)] == [
        "$25,514", "$0.89", "$0.0052", "$0.00", "−$24.00", "—",
    ]  # fmt: skip
    assert percent(1e-5) == "< 0.1 %" and percent(0.25) == "25.0 %"
    assert (bin_label("__other__"), bin_label("__missing__"), bin_label("[1.5, 2.0)")) == (
        "other",
        "missing",
        "[1.5, 2.0)",
    )


def test_a_decided_canary_shows_its_outcome_not_a_live_counter() -> None:
    guard = Decision(
        action="promote", reason="p below alpha", n=1028, p_promote=2.11e-37, q_rollback=1.0, theta_hat=0.512
    )
    finished = RetrainingStatus(phase="finished", state="CHAMPION", guard=guard)
    assert canary_progress(finished) is None
    outcome = canary_outcome(finished)
    assert outcome is not None and outcome.sentence == (
        "The canary promoted the candidate after 1,028 labelled requests: always-valid p (better) = 2.11e-37, "
        "q (worse) = 1; the candidate's MAE was lower by 0.512 per forecast. Version state now: CHAMPION."
    )
    running = RetrainingStatus(
        phase="canary", state="CANARY", guard=guard.model_copy(update={"action": "continue"})
    )
    assert canary_outcome(running) is None and canary_progress(running) is not None
