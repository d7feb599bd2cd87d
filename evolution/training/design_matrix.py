"""How features become the estimator's input: category encoders fitted on the training rows, and the design matrix.

Pure functions over columns (:mod:`evolution.training.columns`), no I/O. Categories get a fixed ordinal code (by
name) that is stored with the model, so a model loaded elsewhere encodes the same category to the same number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Protocol

import numpy as np

from evolution.training.columns import Columns

MAX_CATEGORIES = 250
"""Categories kept per feature (HistGradientBoosting allows max_bins - 1 = 254); rarer ones become missing."""


class FeatureSpec(Protocol):
    """What encoding needs of a :class:`~evolution.training.trainer.TrainingConfig`, which satisfies it.

    A Protocol rather than the config class, so this module needs nothing of the trainer that builds on it.
    """

    @property
    def features(self) -> Sequence[str]: ...

    @property
    def categorical(self) -> Sequence[str]: ...


def fit_encoders(columns: Columns, config: FeatureSpec) -> dict[str, list[str]]:
    """Sorted category names per categorical feature; the MAX_CATEGORIES most frequent (ties by name)."""
    encoders: dict[str, list[str]] = {}
    for name in config.categorical:
        counts: dict[str, int] = {}
        for v in columns[name]:
            if v is not None:
                counts[v] = counts.get(v, 0) + 1
        kept = sorted(counts, key=lambda c: (-counts[c], c))[:MAX_CATEGORIES]
        encoders[name] = sorted(kept)
    return encoders


def design_matrix(
    columns: Mapping[str, np.ndarray], config: FeatureSpec, encoders: Mapping[str, list[str]], n: int
) -> np.ndarray:
    """The n x len(features) float matrix the estimator sees: categories by their code, NaN for missing."""
    matrix = np.full((n, len(config.features)), np.nan, dtype=np.float64)
    for j, name in enumerate(config.features):
        if name not in columns:
            continue  # absent everywhere → missing, which the model handles
        col = columns[name]
        if name in encoders:
            codes = {c: float(i) for i, c in enumerate(encoders[name])}
            # None and unseen categories are not keys: both become NaN (missing)
            matrix[:, j] = list(map(codes.get, col, repeat(np.nan, n)))
        else:
            matrix[:, j] = col
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix
