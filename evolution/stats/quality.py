"""Data-quality checks of a drift scan (spec statistics.md section 1b): what PSI on deciles cannot see.

Each check is a one-sided test with its own reason code, computed from counts taken in the same pass as the
drift bins (``binning.Tally``) and the data frozen with the baseline (``FeatureQuality``):

* ``out_of_range`` (numbers): k of the window's m non-missing values outside the baseline's support [lo, hi] (its
  0.001/0.999 quantiles); pi0 = (c0 + 0.5) / (n + 1); p = binom.sf(k - 1, m, pi0); floor k/m >= max(1 %, 5 pi0).
* ``missing_rate`` (every feature): pooled two-proportion z for an increase, p = Phi(-z); floor +5 points.
* ``unseen_categories`` (categorical): k window values never seen in the baseline at all; Good-Turing
  pi_u = max(N1/n, 0.5/n); p = binom.sf(k - 1, m, pi_u); floor k/m >= 5 %.
* ``stuck`` (every feature): v the window's most frequent non-missing value, k its count, pi = (c_v + 0.5)/(n + 1);
  p = binom.sf(k - 1, m, pi); floor k/m >= 95 %.

The p-values of one report form one Benjamini-Hochberg family, apart from the drift family, so drift decisions do
not change; a check alerts only when its adjusted p < alpha and its effect passes its floor.

Where the spec cannot be followed to the letter in one pass, the choice is stated here:

* ``stuck`` on a continuous feature: no single pass with bounded memory can count an arbitrary value exactly (and
  counts must add up over chunks in any order), so its values are counted per frozen bin, with the baseline's heavy
  values (>= 1 % of it, e.g. the 0 of a rain gauge) counted one by one and taken out of their bins. v is then a
  heavy value or a band [a, b) of the baseline's deciles: a sensor stuck at any value puts >= 95 % of the window in
  one band that usually holds about 10 %, and the report names the band. Categorical features are counted by
  value exactly; values outside the kept categories exactly up to 1,000 distinct ones in the window, beyond which
  the value cannot be named and, if it could reach the floor, stuck reports ``not_measured``.
* ``n`` in pi0, pi_u and pi counts the baseline's non-missing values, as m counts the window's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from evolution.stats.binning import Tally, category_label
from evolution.stats.drift_models import DriftConfig, FeatureBaseline
from evolution.stats.multiple_testing import benjamini_hochberg
from evolution.stats.quality_models import (
    FeatureQuality,
    NotMeasuredReason,
    QualityCheck,
    QualityConfig,
    QualityLevel,
    QualityResult,
    ReasonCode,
)

__all__ = [
    "judge_quality",
    "missing_rate_test",
    "out_of_range_test",
    "stuck_test",
    "unseen_categories_test",
]


# ------------------------------------------------------------------------------------------------------------
# The tests themselves, on counts (the reference values of spec section 3 are checked against these).


def _binom_sf(k: int, m: int, pi: float) -> float:
    """P(K >= k) for K ~ Binomial(m, pi), i.e. ``scipy.stats.binom.sf(k - 1, m, pi)``; 1 when k <= 0.

    ``special.bdtrc`` is the same regularised incomplete beta at a fraction of the cost of the distribution object
    (a report has tens of checks)."""
    if k <= 0:
        return 1.0
    return float(special.bdtrc(k - 1, m, pi))


def out_of_range_test(k: int, m: int, outside: int, n: int) -> tuple[float, float]:
    """(p, pi0): k of m window values outside the support, c0 = ``outside`` of the baseline's n."""
    pi0 = (outside + 0.5) / (n + 1)
    return _binom_sf(k, m, pi0), pi0


def missing_rate_test(x1: int, n: int, x2: int, m: int) -> tuple[float, float]:
    """(z, p): pooled two-proportion z for a rise from x1 of n missing to x2 of m; p = Phi(-z)."""
    pooled = (x1 + x2) / (n + m)
    diff = x2 / m - x1 / n
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n + 1.0 / m))
    if se > 0:
        z = diff / se
        return z, float(special.ndtr(-z))
    return 0.0, 0.5  # nothing missing on either side, or everything: no rise


def unseen_categories_test(k: int, m: int, singletons: int, n: int) -> tuple[float, float]:
    """(p, pi_u): k of m window values never seen; Good-Turing pi_u = max(N1/n, 0.5/n)."""
    pi_u = max(singletons / n, 0.5 / n)
    return _binom_sf(k, m, pi_u), pi_u


def stuck_test(k: int, m: int, count: int, n: int) -> tuple[float, float]:
    """(p, pi): the window's most frequent value holds k of m; the baseline had it ``count`` times of n."""
    pi = (count + 0.5) / (n + 1)
    return _binom_sf(k, m, pi), pi


# ------------------------------------------------------------------------------------------------------------
# Judging a window.


def _pct(share: float) -> str:
    return f"{100.0 * share:.1f} %"


def _num(x: float) -> str:
    return f"{x:.4g}"


@dataclass(frozen=True)
class _Unit:
    """A candidate for the stuck value: a value (exact) or a band of a continuous feature's bins."""

    label: str  # empty for a band, named only if it wins (formatting every band's bounds is not free)
    window: int
    baseline: int
    band: int = -1  # the bin index of a band


def judge_quality(
    features: Sequence[FeatureBaseline],
    window_counts: Mapping[str, np.ndarray],
    tallies: Mapping[str, Tally],
    config: DriftConfig,
) -> QualityResult:
    """Every check of every feature, one BH family across them, and the alerts."""
    qc = config.quality
    checks: list[QualityCheck] = []
    for f in features:
        counts = window_counts[f.name]
        w = counts.tolist() if isinstance(counts, np.ndarray) else [int(c) for c in counts]
        checks.extend(_feature_checks(f, w, tallies[f.name], qc))
    judged = [i for i, c in enumerate(checks) if c.p_value is not None]
    if judged:
        adjusted = benjamini_hochberg([checks[i].p_value for i in judged])  # type: ignore[misc]
        for i, p_adj in zip(judged, adjusted, strict=True):
            c = checks[i]
            fires = (
                bool(p_adj < config.alpha)
                and c.effect is not None
                and c.floor is not None
                and c.effect >= c.floor
            )
            c.p_adjusted = float(p_adj)  # the drafts are ours: set in place rather than copied
            if fires:
                c.status = "alert"
                c.description = _alert_words(c)
    level: QualityLevel = "insufficient_data"
    if judged:
        level = "alert" if any(c.status == "alert" for c in checks) else "ok"
    return QualityResult(checks=checks, level=level, config=qc, alpha=config.alpha)


def _check(**fields: Any) -> QualityCheck:
    return QualityCheck(**fields)


def _alert_words(c: QualityCheck) -> str:
    hints: dict[ReasonCode, str] = {
        "out_of_range": "a faulty sensor or a unit change?",
        "missing_rate": "a sensor or a feed dropping out?",
        "unseen_categories": "renamed or misspelt categories?",
        "stuck": "a stuck sensor or a repeated default?",
    }
    return f"{c.description} ({hints[c.check]})"


def _applicable(f: FeatureBaseline) -> list[ReasonCode]:
    checks: list[ReasonCode] = []
    if f.numeric_values:
        checks.append("out_of_range")
    checks.append("missing_rate")
    if f.kind == "categorical":
        checks.append("unseen_categories")
    checks.append("stuck")
    return checks


def _feature_checks(f: FeatureBaseline, w: list[int], t: Tally, qc: QualityConfig) -> list[QualityCheck]:
    rows = sum(w)
    missing = int(w[-1])
    m = rows - missing
    out: list[QualityCheck] = []
    for check in _applicable(f):
        if check == "missing_rate":
            out.append(_missing_rate(f, rows, missing, qc))
            continue
        q = f.quality
        if q is None:
            out.append(_not_measured(f.name, check, "baseline_lacks_quality_data", m))
        elif m < qc.min_values or q.present < qc.min_values:
            out.append(_insufficient(f.name, check, m, q.present, qc))
        elif check == "out_of_range":
            out.append(_out_of_range(f, q, t, m, qc))
        elif check == "unseen_categories":
            out.append(_unseen(f, q, t, m, qc))
        else:
            out.append(_stuck(f, q, w, t, m, qc))
    return out


def _not_measured(feature: str, check: ReasonCode, reason: NotMeasuredReason, m: int) -> QualityCheck:
    words = {
        "baseline_lacks_quality_data": (
            f"not checked: the baseline of {feature} was made before the data-quality checks and lacks the data "
            "they need (it must be recomputed from its snapshot)"
        ),
        "high_cardinality": (
            f"not measured: {feature} is free text or an identifier (most of its baseline values are distinct), "
            "so its values cannot be compared with the baseline's"
        ),
        "too_many_categories": (
            f"not measured: {feature} had too many distinct baseline values to keep them all, so new ones cannot "
            "be told apart"
        ),
        "too_many_distinct_values": (
            f"not measured: the window's {feature} values are spread over too many distinct values to name the "
            "most frequent one"
        ),
    }
    return _check(
        feature=feature, check=check, status="not_measured", reason=reason, m=m, description=words[reason]
    )


def _insufficient(feature: str, check: ReasonCode, m: int, n: int, qc: QualityConfig) -> QualityCheck:
    where = f"the window has {m}" if m < qc.min_values else f"the baseline has {n}"
    return _check(
        feature=feature,
        check=check,
        status="insufficient_data",
        m=m,
        description=f"too few values to judge: {where} non-missing {feature} values ({qc.min_values} needed)",
    )


def _missing_rate(f: FeatureBaseline, rows: int, missing: int, qc: QualityConfig) -> QualityCheck:
    x1 = int(f.counts[-1])
    if rows < qc.min_values or f.n < qc.min_values:
        where = f"the window has {rows}" if rows < qc.min_values else f"the baseline has {f.n}"
        return _check(
            feature=f.name,
            check="missing_rate",
            status="insufficient_data",
            m=rows,
            description=f"too few rows to judge the missing share of {f.name}: {where} ({qc.min_values} needed)",
        )
    z, p = missing_rate_test(x1, f.n, missing, rows)
    base, now = x1 / f.n, missing / rows
    return _check(
        feature=f.name,
        check="missing_rate",
        status="ok",
        k=missing,
        m=rows,
        p_value=p,
        effect=now - base,
        floor=qc.missing_rate_min_increase,
        baseline_rate=base,
        z=z,
        description=f"{_pct(now)} of {f.name} values are missing, against {_pct(base)} in the baseline",
    )


def _out_of_range(f: FeatureBaseline, q: FeatureQuality, t: Tally, m: int, qc: QualityConfig) -> QualityCheck:
    if q.lo is None or q.hi is None:
        return _not_measured(f.name, "out_of_range", "baseline_lacks_quality_data", m)
    k = t.below + t.above
    p, pi0 = out_of_range_test(k, m, q.outside, q.present)
    # The side holding (nearly) all of them names the check's direction; a stray value on the other side is noise.
    direction = "above" if t.above >= 0.9 * k else ("below" if t.below >= 0.9 * k else "both")
    usual = f" (usually {_pct(q.outside / q.present)} lie outside {_num(q.lo)} to {_num(q.hi)})"
    if k == 0:
        words = f"no {f.name} value is outside the usual range {_num(q.lo)} to {_num(q.hi)}"
    elif direction == "above":
        words = f"{_pct(t.above / m)} of {f.name} values are above the usual maximum of {_num(q.hi)}{usual}"
    elif direction == "below":
        words = f"{_pct(t.below / m)} of {f.name} values are below the usual minimum of {_num(q.lo)}{usual}"
    else:
        words = (
            f"{_pct(k / m)} of {f.name} values are outside the usual range {_num(q.lo)} to {_num(q.hi)} "
            f"({_pct(t.above / m)} above, {_pct(t.below / m)} below){usual}"
        )
    return _check(
        feature=f.name,
        check="out_of_range",
        status="ok",
        k=k,
        m=m,
        p_value=p,
        effect=k / m,
        floor=max(qc.out_of_range_min_share, qc.out_of_range_baseline_multiple * pi0),
        baseline_rate=pi0,
        direction=direction if k else None,
        bounds=(q.lo, q.hi),
        description=words,
    )


def _baseline_count_of(q: FeatureQuality) -> dict[str, int]:
    if q.seen is not None and q.seen_counts is not None:
        return dict(zip(q.seen, q.seen_counts, strict=True))
    if q.seen_values is not None and q.seen_counts is not None:
        return {category_label(v): c for v, c in zip(q.seen_values, q.seen_counts, strict=True)}
    return {}


def _unseen(f: FeatureBaseline, q: FeatureQuality, t: Tally, m: int, qc: QualityConfig) -> QualityCheck:
    if f.high_cardinality(qc.high_cardinality_share):
        return _not_measured(f.name, "unseen_categories", "high_cardinality", m)
    if q.seen is None and q.seen_values is None:
        return _not_measured(f.name, "unseen_categories", "too_many_categories", m)
    k = t.unseen
    p, pi_u = unseen_categories_test(k, m, q.singletons, q.present)
    examples: list[str] = []
    if t.others is not None and k:
        known = _baseline_count_of(q)
        new = [(category_label(key), c) for key, c in t.others.items() if category_label(key) not in known]
        examples = [lab for lab, _ in sorted(new, key=lambda lc: (-lc[1], lc[0]))[:5]]
    words = f"{_pct(k / m)} of {f.name} values are categories never seen in the baseline"
    if examples:
        words += ", e.g. " + ", ".join(repr(e) for e in examples)
    return _check(
        feature=f.name,
        check="unseen_categories",
        status="ok",
        k=k,
        m=m,
        p_value=p,
        effect=k / m,
        floor=qc.unseen_min_share,
        baseline_rate=pi_u,
        examples=examples,
        description=words,
    )


def _stuck_units(f: FeatureBaseline, q: FeatureQuality, w: list[int], t: Tally) -> list[_Unit] | None:
    """The candidates for the window's most frequent value, with window and baseline counts; None when the
    values outside the kept categories were too many to count one by one."""
    if f.kind == "numeric":
        band_w = w[:-1]
        band_b = f.counts[:-1]
        units = []
        for value, cw, cb in zip(
            q.heavy_values, t.heavy or [0] * len(q.heavy_values), q.heavy_counts, strict=True
        ):
            j = int(np.searchsorted(f.edges, value, side="right"))
            band_w[j] -= cw
            band_b[j] -= cb
            units.append(_Unit(category_label(value), cw, cb))
        units.extend(_Unit("", cw, cb, band=j) for j, (cw, cb) in enumerate(zip(band_w, band_b, strict=True)))
        return units
    units = [_Unit(cat, cw, cb) for cat, cw, cb in zip(f.categories, w[:-2], f.counts[:-2], strict=True)]
    if t.others is None:
        return None if int(w[-2]) > max((u.window for u in units), default=0) else units
    known = _baseline_count_of(q)
    for key, c in t.others.items():
        label = category_label(key)
        units.append(_Unit(label, int(c), known.get(label, 0) if known else q.other_max))
    return units


def _band_label(edges: Sequence[float], j: int) -> str:
    bounds = [-math.inf, *edges, math.inf]
    lo, hi = bounds[j], bounds[j + 1]
    if lo == -math.inf:
        return f"below {_num(hi)}"
    if hi == math.inf:
        return f"{_num(lo)} or more"
    return f"{_num(lo)} to {_num(hi)}"


def _stuck(
    f: FeatureBaseline, q: FeatureQuality, w: list[int], t: Tally, m: int, qc: QualityConfig
) -> QualityCheck:
    units = _stuck_units(f, q, w, t)
    if units is None:
        if int(w[-2]) >= qc.stuck_min_share * m:  # the unnamed value could reach the floor
            return _not_measured(f.name, "stuck", "too_many_distinct_values", m)
        return _check(
            feature=f.name,
            check="stuck",
            status="ok",
            m=m,
            p_value=1.0,  # no value can reach the floor: the test cannot reject (a valid, conservative p)
            floor=qc.stuck_min_share,
            effect=int(w[-2]) / m,  # an upper bound on the share of any value outside the kept categories
            description=f"no single {f.name} value holds {_pct(qc.stuck_min_share)} of the window",
        )
    top = min(units, key=lambda u: (-u.window, u.band, u.label))
    if top.band >= 0:
        top = _Unit(_band_label(f.edges, top.band), top.window, top.baseline, top.band)
    p, pi = stuck_test(top.window, m, top.baseline, q.present)
    share = top.window / m
    if top.band >= 0:
        words = f"{_pct(share)} of {f.name} values lie in one band ({top.label}) that usually holds {_pct(pi)} of them"
    else:
        shown = top.label if f.numeric_values else repr(top.label)
        words = f"{_pct(share)} of {f.name} values are {shown}, usually {_pct(pi)} of them"
    return _check(
        feature=f.name,
        check="stuck",
        status="ok",
        k=top.window,
        m=m,
        p_value=p,
        effect=share,
        floor=qc.stuck_min_share,
        baseline_rate=pi,
        value=top.label,
        description=words,
    )
