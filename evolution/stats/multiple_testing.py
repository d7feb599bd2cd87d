"""Benjamini-Hochberg adjustment across the features of one scan."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evolution.errors import InvalidInput


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """BH step-up adjusted p-values, in the input order, capped at 1.

    A feature is declared drifted at false-discovery rate ``alpha`` when its adjusted p-value is below
    ``alpha``.
    BH (not Bonferroni) because a scan tests tens of features and a missed drift is as costly as a false
    alarm.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if p.size == 0:
        return p.copy()
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise InvalidInput("benjamini_hochberg: p-values must be finite and within [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    # Step-up: the adjusted value at rank i is the smallest scaled value at any rank >= i.
    adjusted_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted_sorted, 1.0)
    return out
