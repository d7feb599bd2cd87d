"""What a page's layout must not do, read from the elements a run of the page produced (AppTest).

Tables: the grid draws on a canvas and cuts whatever does not fit its column, so every column must have a width
that holds its header and, unless the table wraps text, its longest value (glyph widths estimated generously for
the grid's 14 px font). Charts: every position axis titled, every threshold line (a rule mark) labelled by a text
mark beside it, every time axis in UTC with a format that does not tick in milliseconds.
"""

from __future__ import annotations

import json
from typing import Any

from streamlit.testing.v1 import AppTest

from dashboard.tables import CELL_CHAR_PX, CELL_PADDING_PX, HEADER_CHAR_PX, HEADER_PADDING_PX, cell_text

NAMED_WIDTHS = {"small": 75, "medium": 200, "large": 400}
WRAPPING_ROW_PX = 64  # the grid wraps text in rows taller than 4 rem
MAX_WRAPPED_LINES = 3


def _elements(at: AppTest, kind: str) -> list[Any]:
    found: list[Any] = []

    def walk(node: Any) -> None:
        if getattr(node, "type", None) == kind:
            found.append(node)
        children = getattr(node, "children", None)
        if isinstance(children, dict):
            for child in children.values():
                walk(child)

    walk(at._tree)
    return found


def table_problems(at: AppTest) -> list[str]:
    problems = []
    for n, table in enumerate(_elements(at, "dataframe")):
        config = json.loads(table.proto.columns or "{}")
        wraps = table.proto.row_height > WRAPPING_ROW_PX
        frame = table.value
        for name in frame.columns:
            column = config.get(str(name), {})
            header = column.get("label") or str(name)
            width = column.get("width")
            width = NAMED_WIDTHS.get(width, width)
            where = f"table {n + 1}, column {header!r}"
            if not isinstance(width, int):
                problems.append(f"{where}: no width set, so the grid may cut it")
                continue
            if len(header) * HEADER_CHAR_PX + HEADER_PADDING_PX > width:
                problems.append(f"{where}: header cut at {width} px")
            longest = max((cell_text(v) for v in frame[name]), key=len, default="")
            room = (width - CELL_PADDING_PX) / CELL_CHAR_PX * (MAX_WRAPPED_LINES if wraps else 1)
            if len(longest) > room:
                problems.append(f"{where}: value {longest[:40]!r}… cut at {width} px")
    return problems


def _units(spec: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Groups of unit specs that share a layer (a rule and its label are siblings)."""
    if "layer" in spec:
        direct = [s for s in spec["layer"] if "layer" not in s]
        groups = [direct] if direct else []
        for nested in (s for s in spec["layer"] if "layer" in s):
            groups += _units(nested)
        return groups
    return [[spec]]


def _mark(unit: dict[str, Any]) -> str:
    mark = unit.get("mark")
    return str(mark.get("type") if isinstance(mark, dict) else mark)


def chart_problems(at: AppTest) -> list[str]:
    problems = []
    for n, chart in enumerate(_elements(at, "vega_lite_chart")):
        spec = json.loads(chart.proto.spec)
        where = f"chart {n + 1}"
        for group in _units(spec):
            marks = [_mark(u) for u in group]
            if "rule" in marks and "text" not in marks:
                problems.append(f"{where}: a threshold line without a label")
            for unit in group:
                if _mark(unit) in ("rule", "text"):
                    continue  # they share the axes of the data they annotate
                for channel in ("x", "y"):
                    encoding = unit.get("encoding", {}).get(channel)
                    if not encoding or "field" not in encoding or encoding.get("axis", {}) is None:
                        continue
                    if not encoding.get("title"):
                        problems.append(f"{where}: the {channel} axis ({encoding['field']}) has no title")
                    if encoding.get("type") == "temporal":
                        if encoding.get("scale", {}).get("type") != "utc":
                            problems.append(f"{where}: the time axis is not in UTC")
                        if "%L" in str(encoding.get("axis", {}).get("format", "%L")):
                            problems.append(f"{where}: the time axis may tick in milliseconds")
    return problems


def layout_problems(at: AppTest) -> list[str]:
    return table_problems(at) + chart_problems(at)
