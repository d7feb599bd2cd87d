"""The dashboard's charts, each axis titled with its quantity and unit, threshold lines labelled in place."""

from __future__ import annotations

from collections.abc import Mapping

import altair as alt
import pandas as pd

from dashboard.formatting import time_x

THRESHOLD_COLOURS = {"warn": "#e8a317", "alert": "#d62728"}


def thresholds_layer(levels: Mapping[str, float], field: str) -> alt.LayerChart:
    """Dashed horizontal lines at each level, each with its name and value written at its right end."""
    data = pd.DataFrame(
        [
            {"level": name, field: value, "label": f"{name}: {field} ≥ {value:g}"}
            for name, value in levels.items()
        ]
    )
    base = alt.Chart(data)
    colour = alt.Color(
        "level:N",
        scale=alt.Scale(domain=list(levels), range=[THRESHOLD_COLOURS.get(n, "grey") for n in levels]),
        legend=None,  # each line carries its own label
    )
    rules = base.mark_rule(strokeDash=[4, 4]).encode(y=alt.Y(f"{field}:Q"), color=colour)
    labels = base.mark_text(align="right", baseline="bottom", dx=-4, dy=-2).encode(
        x=alt.value("width"), y=alt.Y(f"{field}:Q"), text="label:N", color=colour
    )
    return alt.LayerChart(layer=[rules, labels])


def lines_over_time(
    frame: pd.DataFrame, time: str, value: str, series: str, *, time_title: str, value_title: str
) -> alt.Chart:
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=time_x(time, time_title),
            y=alt.Y(f"{value}:Q", title=value_title),
            color=alt.Color(f"{series}:N", title=series),
            tooltip=[alt.Tooltip(f"{time}:T", format="%Y-%m-%d %H:%M UTC"), series, value],
        )
    )


def psi_over_time(history: pd.DataFrame, levels: Mapping[str, float]) -> alt.LayerChart:
    lines = lines_over_time(
        history,
        "window end",
        "PSI",
        "feature",
        time_title="window end (UTC)",
        value_title="PSI (population stability index, unitless)",
    )
    return alt.layer(lines, thresholds_layer(levels, "PSI")).resolve_scale(color="independent")


def shares_by_bin(distribution: pd.DataFrame, feature: str) -> alt.Chart:
    return (
        alt.Chart(distribution)
        .mark_bar()
        .encode(
            x=alt.X("bin:N", sort=None, title=f"{feature}: bin (frozen with the baseline)"),
            xOffset="sample:N",
            y=alt.Y("share:Q", title="share of rows", axis=alt.Axis(format="%")),
            color=alt.Color("sample:N", title="sample"),
            tooltip=["bin", "sample", alt.Tooltip("share:Q", format=".1%")],
        )
    )


def bars(
    frame: pd.DataFrame,
    category: str,
    value: str,
    *,
    category_title: str,
    value_title: str,
    colour: str | None = None,
    sort: str | None = "-x",
) -> alt.Chart:
    """Horizontal bars; with ``colour``, one bar per value of that field side by side in each category."""
    encoding: dict[str, object] = {
        "y": alt.Y(f"{category}:N", sort=sort, title=category_title, axis=alt.Axis(labelLimit=320)),
        "x": alt.X(f"{value}:Q", title=value_title),
        "tooltip": [c for c in frame.columns],
    }
    if colour is not None:
        encoding["color"] = alt.Color(f"{colour}:N", title=colour)
        encoding["yOffset"] = alt.YOffset(f"{colour}:N")
    return alt.Chart(frame).mark_bar().encode(**encoding)
