"""Tables that fit their columns: every column sized to its header and its longest value, long text wrapped.

The grid (glide-data-grid) draws on a canvas and cuts what does not fit ("CANARY → C"): each column gets an explicit
width from its header and values here, and columns of prose (reasons) are wide and wrapped over several lines
(Streamlit wraps text once a row is taller than 4 rem). Hashes are shortened in tables; the page lists them whole in
a code block, whose copy button copies them.
"""

from __future__ import annotations

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
WRAP_PX = 300
WRAP_LINES = 3
WRAP_ROW_PX = 72  # > 4 rem: the grid wraps text
WRAP_CHARS = int((WRAP_PX - CELL_PADDING_PX) / CELL_CHAR_PX * WRAP_LINES) - 3


def cell_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def header_px(header: str) -> int:
    return int(len(header) * HEADER_CHAR_PX + HEADER_PADDING_PX)


def cell_px(text: str) -> int:
    return int(len(text) * CELL_CHAR_PX + CELL_PADDING_PX)


def fit_width(header: str, values: Sequence[Any]) -> int:
    """Pixels that show ``header`` and every value whole (capped: longer text belongs in a wrapped column)."""
    widest = max((cell_px(cell_text(v)) for v in values), default=MIN_PX)
    return max(MIN_PX, min(MAX_PX, max(header_px(header), widest)))


def clip(text: str, limit: int = WRAP_CHARS) -> str:
    """Prose for a wrapped column: whole if it fits its lines, else cut at a word with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rsplit(" ", 1)[0] + "…"


def show(
    rows: pd.DataFrame | list[dict[str, Any]],
    *,
    wrap: Sequence[str] = (),
    help: Mapping[str, str] | None = None,
) -> None:
    """A read-only table whose columns fit; ``wrap``: prose columns, shown wide over up to three lines."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    help = help or {}
    config: dict[str, Any] = {}
    for name in frame.columns:
        if name in wrap:
            frame[name] = [clip(cell_text(v)) for v in frame[name]]
            width = max(WRAP_PX, header_px(str(name)))
        else:
            width = fit_width(str(name), list(frame[name]))
        config[str(name)] = st.column_config.Column(width=width, help=help.get(str(name)))
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config=config,
        row_height=WRAP_ROW_PX if wrap else None,
    )


def full_values(title: str, lines: Sequence[str]) -> None:
    """Long identifiers (hashes) in full, one a line, in a code block with a copy button."""
    if lines:
        with st.expander(title):
            st.code("\n".join(lines), language=None)
