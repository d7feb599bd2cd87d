"""Tables that fit their columns: every column sized to its header and its longest value, long text wrapped.

The grid (glide-data-grid) draws on a canvas and cuts what does not fit ("CANARY → C"): each column gets an explicit
width from its header and values here. A table with prose (reasons) is a plain HTML table instead, which fits the
page's width and wraps every cell, so a reason is read whole. Hashes are shortened in tables; the page lists them
whole in a code block, whose copy button copies them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st

CELL_CHAR_PX = 7.5  # a character of the grid's 14 px sans-serif, generously
HEADER_CHAR_PX = 7.2
CELL_PADDING_PX = 20
HEADER_PADDING_PX = 32  # padding plus the header's sort/menu affordance
MIN_PX = 60
MAX_PX = 360


def cell_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def header_px(header: str) -> int:
    return math.ceil(len(header) * HEADER_CHAR_PX + HEADER_PADDING_PX)


def cell_px(text: str) -> int:
    return math.ceil(len(text) * CELL_CHAR_PX + CELL_PADDING_PX)


def fit_width(header: str, values: Sequence[Any]) -> int:
    """Pixels that show ``header`` and every value whole (capped: longer text belongs in a wrapped column)."""
    widest = max((cell_px(cell_text(v)) for v in values), default=MIN_PX)
    return max(MIN_PX, min(MAX_PX, max(header_px(header), widest)))


def show(
    rows: pd.DataFrame | list[dict[str, Any]],
    *,
    wrap: Sequence[str] = (),
    help: Mapping[str, str] | None = None,
) -> None:
    """A read-only table whose columns fit; ``wrap``: prose columns, read whole (an HTML table wrapping its cells
    when any of them holds more than a line)."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    help = help or {}
    if any(fit_width(str(name), list(frame[name])) >= MAX_PX for name in wrap if name in frame.columns):
        st.table(frame.astype(object).map(cell_text).style.hide(axis="index"))
        described = [f"**{name}**: {text}" for name, text in help.items() if name in frame.columns]
        if described:
            st.caption(" · ".join(described))
        return
    config = {
        str(name): st.column_config.Column(
            width=fit_width(str(name), list(frame[name])), help=help.get(str(name))
        )
        for name in frame.columns
    }
    st.dataframe(frame, hide_index=True, width="stretch", column_config=config)


def full_values(title: str, lines: Sequence[str]) -> None:
    """Long identifiers (hashes) in full, one a line, in a code block with a copy button."""
    if lines:
        with st.expander(title):
            st.code("\n".join(lines), language=None)
