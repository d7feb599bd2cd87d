"""What ``evolution drift compare`` prints: the drift table (PSI/KL per feature) and the data-quality checks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from evolution.stats.drift import DriftResult
from evolution.stats.quality_models import QualityCheck, QualityResult

NO_RETRAINING = (
    "a data-quality alert does not start a retraining by itself (retraining on broken data teaches the model "
    "the breakage)"
)


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]


def drift_table(result: DriftResult) -> str:
    """PSI, KL and the BH-adjusted p per feature; a feature not measured says so (and why) instead of a PSI."""
    header = ("feature", "kind", "psi", "kl", "p_adj", "missing% base->cur", "status")
    rows = [
        (
            f.feature,
            f.kind,
            "not measured" if f.status == "not_measured" else _fmt(f.psi),
            _fmt(f.kl),
            _fmt(f.p_adjusted, ".3g"),
            f"{_pct(f.baseline_missing_rate)} -> {_pct(f.window_missing_rate)}",
            f.status,
        )
        for f in result.features
    ]
    lines = _table(header, rows)
    lines.extend(
        f"{f.feature}: not measured for drift: {f.reason or 'no reason given'}"
        for f in result.features
        if f.status == "not_measured"
    )
    if result.mae is not None:
        m = result.mae
        lines.append(
            f"MAE: baseline {m.baseline_mae:.4g} -> window {_fmt(m.window_mae, '.4g')} "
            f"(ratio {_fmt(m.ratio, '.3f')}, z {_fmt(m.z, '.2f')}, p {_fmt(m.p_value, '.3g')}): {m.status}"
        )
    cfg = result.config
    lines.append(
        f"level: {result.level}   (alpha {cfg.alpha}, warn PSI {cfg.warn_psi}, alert PSI {cfg.alert_psi}, "
        f"KL is {result.kl_direction})"
    )
    return "\n".join(lines)


def _counts(c: QualityCheck) -> str:
    return "-" if c.k is None or c.m is None else f"{c.k}/{c.m}"


def quality_table(quality: QualityResult | None) -> str:
    """The data-quality checks (statistics.md 1b) that are not plainly ok, one row per feature and check."""
    if quality is None:
        return "data quality: checks not run (a result made before the data-quality checks)"
    tally = Counter(c.status for c in quality.checks)
    summary = ", ".join(
        f"{tally[s]} {s.replace('_', ' ')}"
        for s in ("alert", "insufficient_data", "not_measured", "ok")
        if tally[s]
    )
    lines = [
        f"data quality: {quality.level}   ({len(quality.checks)} checks: {summary}; one Benjamini-Hochberg family, "
        f"alpha {quality.alpha})"
    ]
    shown = [c for c in quality.checks if c.status != "ok"]
    if shown:
        header = ("feature", "check", "status", "k/m", "p_adj", "what")
        rows = [
            (c.feature, c.check, c.status, _counts(c), _fmt(c.p_adjusted, ".3g"), c.description)
            for c in shown
        ]
        lines.extend(_table(header, rows))
    else:
        lines.append("every check ok")
    if quality.alerts:
        lines.append(f"note: {NO_RETRAINING}")
    return "\n".join(lines)


def compare_text(result: DriftResult) -> str:
    return f"{drift_table(result)}\n\n{quality_table(result.quality)}"
