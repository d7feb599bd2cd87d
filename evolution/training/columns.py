"""The trainer's data shapes: rows or columns in, typed numpy columns out, and the per-row split digest.

Pure functions over arrays, no I/O. The trainer, validation and the SHAP explainer all read data through
:func:`as_columns`, so a value means the same thing to each: text columns are object arrays with None for missing,
every other column is float64 with NaN for missing. :func:`split_digests` hashes each row's split keys; the held-out
rows are the lowest digests (:func:`holdout_mask_from_digests`), which depends neither on row order nor on the seed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from evolution.errors import InvalidInput
from evolution.timeutil import iso, parse_iso

Rows = Sequence[Mapping[str, Any]]
Columns = Mapping[str, np.ndarray]


def as_columns(data: Rows | Columns, names: Sequence[str], text: Collection[str]) -> dict[str, np.ndarray]:
    """The columns ``names`` of rows or columns: object arrays (None = missing) for ``text``, else float64.

    Other columns are ignored (rows carry ids and times the model does not use); a name absent from every row
    is left out, so callers decide whether that is an error. A key absent from one row is missing there.
    """
    out: dict[str, np.ndarray] = {}
    if isinstance(data, Mapping):
        for name in names:
            if name not in data:
                continue
            arr = np.asarray(data[name])
            if name in text:
                out[name] = _text_array(list(arr))
            elif arr.dtype.kind in "fiub":
                out[name] = arr.astype(np.float64)
            else:
                out[name] = _float_array(name, list(arr))
        lengths = {len(v) for v in out.values()}
        if len(lengths) > 1:
            raise InvalidInput(f"columns have different lengths: {sorted(lengths)}")
        return out
    rows = data if isinstance(data, Sequence) else list(data)
    present = {name for row in rows for name in row}
    for name in names:
        if name not in present:
            continue
        values = [row.get(name) for row in rows]
        out[name] = _text_array(values) if name in text else _float_array(name, values)
    return out


def data_length(data: Rows | Columns) -> int:
    """Number of rows in rows or columns."""
    if isinstance(data, Mapping):
        return len(next(iter(data.values()))) if data else 0
    return len(data)


def require_columns(columns: Columns, names: Sequence[str]) -> None:
    """Raise InvalidInput naming the ``names`` that ``columns`` lacks."""
    missing = [name for name in names if name not in columns]
    if missing:
        raise InvalidInput(f"data lacks the column(s) {missing}; it has {sorted(columns)}")


def split_digests(columns: Columns, split_keys: Sequence[str]) -> np.ndarray:
    """A uint64 per row from sha256 of its split keys; timestamps normalised so text and datetime agree."""
    require_columns(columns, split_keys)
    n = data_length(columns)
    parts = [[_key_text(name, columns[name][i]) for name in split_keys] for i in range(n)]
    return np.array(
        [int.from_bytes(hashlib.sha256("\x1f".join(p).encode()).digest()[:8], "big") for p in parts],
        dtype=np.uint64,
    )


def holdout_mask_from_digests(digests: np.ndarray, fraction: float) -> np.ndarray:
    """True for the rows whose digest falls in the lowest ``fraction`` of the uint64 range."""
    threshold = np.uint64(min(int(fraction * 2.0**64), 2**64 - 1))
    return np.asarray(digests < threshold, dtype=bool)


def _key_text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return iso(value)
    if name.endswith("_time") or name.endswith("_at"):
        try:
            return iso(parse_iso(str(value)))
        except ValueError:
            return str(value)
    return str(value)


def _text_array(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    if set(map(type, values)) <= {str, type(None)}:
        out[:] = values  # the usual case, and a hot one when scanning: nothing to convert
        return out
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out[i] = None
        elif isinstance(v, datetime):
            out[i] = v
        else:
            out[i] = str(v)
    return out


def _float_array(name: str, values: Sequence[Any]) -> np.ndarray:
    try:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"column {name!r} must be numeric (it is not declared categorical): {exc}"
        ) from exc
