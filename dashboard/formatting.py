"""How the dashboard writes times, money, hashes and category bins, and labels chart axes: one way everywhere.

Times are UTC on a 24-hour clock with the zone said; chart time axes are UTC too (Vega-Lite would otherwise use the
browser's zone and a 12-hour clock, and tick a short span in milliseconds).
"""

from __future__ import annotations

from datetime import UTC, datetime

import altair as alt

HASH_CHARS = 12
TIME_FORMAT = "%Y-%m-%d %H:%M"
# The drift statistics' reserved bin names (evolution/stats/drift.py), in words.
BIN_WORDS = {"__other__": "other", "__missing__": "missing"}


def when(at: datetime | None, seconds: bool = False) -> str:
    """A UTC instant as '2026-12-07 19:26 UTC' (24-hour clock, zone stated); '' for None."""
    if at is None:
        return ""
    utc = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    return utc.strftime(TIME_FORMAT + (":%S" if seconds else "")) + " UTC"


def span(start: datetime | None, end: datetime | None) -> str:
    return f"{when(start)} to {when(end)}"


def money(amount: float | None) -> str:
    """USD: whole dollars from $1,000, cents below, four decimals below a cent (never a real spend shown as $0.00)."""
    if amount is None:
        return "—"
    sign, size = ("−" if amount < 0 else ""), abs(amount)
    if size >= 1000:
        return f"{sign}${size:,.0f}"
    if size >= 0.01 or size == 0:
        return f"{sign}${size:,.2f}"
    if size < 0.0001:
        return f"< {sign}$0.0001"
    return f"{sign}${size:.4f}"


def percent(share: float | None, digits: int = 1) -> str:
    """A share as a percentage; a share too small to show at ``digits`` says so instead of reading 0."""
    if share is None:
        return "—"
    smallest = 10.0**-digits
    if 0 < 100 * share < smallest:
        return f"< {smallest:g} %"
    return f"{100 * share:,.{digits}f} %"


def short_hash(value: str | None) -> str:
    return (value or "")[:HASH_CHARS]


def bin_label(label: str) -> str:
    return BIN_WORDS.get(label, label)


def time_x(field: str, title: str = "time (UTC)") -> alt.X:
    """A UTC time axis labelled with its zone, ticks in minutes at the finest (no '.863' millisecond ticks)."""
    return alt.X(
        f"{field}:T",
        title=title,
        scale=alt.Scale(type="utc"),
        axis=alt.Axis(format=TIME_FORMAT, labelAngle=-30, tickMinStep=60_000),
    )
