"""Offline validation of a candidate against the champion on the same held-out rows.

This is the gate between TRAINING and VALIDATED. It only asks "is the candidate at least as good on data
neither model trained on?"; whether it is *significantly* better on live traffic is the canary guard's
question. The two models may be of different formats (:mod:`evolution.training.formats`): each predicts the same
rows through the port.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from evolution.errors import InsufficientData, InvalidInput
from evolution.training.columns import Columns, Rows, as_columns
from evolution.training.formats import ServedModel


class ValidationReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    candidate_mae: float | None
    """None only when every candidate prediction was non-finite."""
    champion_mae: float | None
    n: int
    improvement: float | None
    """Relative: (champion_mae - candidate_mae) / champion_mae; positive means the candidate is better."""
    max_regression: float
    passed: bool
    reason: str


def validate(
    candidate: ServedModel,
    champion: ServedModel | None,
    holdout_rows: Rows | Columns,
    max_regression: float = 0.0,
) -> ValidationReport:
    """Pass when there is no champion, or the candidate's MAE <= champion's MAE * (1 + max_regression).

    Both models score the same rows (those with a finite target). A candidate that predicts NaN or ±inf fails.
    Raises InsufficientData when no held-out row has a target, InvalidInput when the two models predict
    different targets.
    """
    if not (max_regression >= 0.0 and math.isfinite(max_regression)):
        raise InvalidInput(f"max_regression must be a finite number >= 0, got {max_regression}")
    target = candidate.target
    if champion is not None and champion.target != target:
        raise InvalidInput(f"candidate predicts {target!r} but the champion predicts {champion.target!r}")

    models = [candidate] if champion is None else [candidate, champion]
    names = list(dict.fromkeys([target, *(f for m in models for f in m.features)]))
    columns = as_columns(holdout_rows, names, {c for m in models for c in m.categorical})
    if target not in columns:
        raise InvalidInput(f"held-out rows lack the target column {target!r}")
    y = columns[target]
    labelled = np.isfinite(y)
    n = int(labelled.sum())
    if n == 0:
        raise InsufficientData(f"no held-out row has a finite {target!r}; cannot validate")
    rows = _select(columns, labelled)
    y = y[labelled]

    candidate_pred = candidate.predict(rows)
    if not np.all(np.isfinite(candidate_pred)):
        bad = int((~np.isfinite(candidate_pred)).sum())
        return ValidationReport(
            candidate_mae=_finite_mae(candidate_pred, y),
            champion_mae=None if champion is None else _finite_mae(champion.predict(rows), y),
            n=n,
            improvement=None,
            max_regression=max_regression,
            passed=False,
            reason=f"candidate produced {bad} non-finite predictions on {n} held-out rows "
            "(its MAE here is over the finite ones only)",
        )
    candidate_mae = float(np.mean(np.abs(candidate_pred - y)))
    if champion is None:
        return ValidationReport(
            candidate_mae=candidate_mae,
            champion_mae=None,
            n=n,
            improvement=None,
            max_regression=max_regression,
            passed=True,
            reason=f"no champion to compare with; candidate MAE {candidate_mae:.4f} on {n} held-out rows",
        )

    champion_pred = champion.predict(rows)
    if not np.all(np.isfinite(champion_pred)):
        # A broken champion is no bar to clear: the candidate, whose predictions are all finite, replaces it.
        bad = int((~np.isfinite(champion_pred)).sum())
        return ValidationReport(
            candidate_mae=candidate_mae,
            champion_mae=_finite_mae(champion_pred, y),
            n=n,
            improvement=None,
            max_regression=max_regression,
            passed=True,
            reason=f"the champion produced {bad} non-finite predictions on {n} held-out rows; "
            f"candidate MAE {candidate_mae:.4f} with all predictions finite",
        )
    champion_mae = float(np.mean(np.abs(champion_pred - y)))
    improvement = (champion_mae - candidate_mae) / champion_mae if champion_mae > 0.0 else None
    passed = candidate_mae <= champion_mae * (1.0 + max_regression)
    verdict = "not worse than" if passed else "worse than"
    return ValidationReport(
        candidate_mae=candidate_mae,
        champion_mae=champion_mae,
        n=n,
        improvement=improvement,
        max_regression=max_regression,
        passed=passed,
        reason=f"candidate MAE {candidate_mae:.4f} is {verdict} champion MAE {champion_mae:.4f} "
        f"(tolerance {max_regression:.1%}) on the same {n} held-out rows",
    )


def _finite_mae(pred: np.ndarray, y: np.ndarray) -> float | None:
    """MAE over the finite predictions only, or None when there are none; for reporting a broken model."""
    finite = np.isfinite(pred)
    return float(np.mean(np.abs(pred[finite] - y[finite]))) if finite.any() else None


def _select(columns: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, Any]:
    return {name: col[mask] for name, col in columns.items()}
