"""Data-quality checks of the drift scan (spec statistics.md section 1b), against the reference values of section 3.

scipy.stats is the reference for every p-value; the decisions go through the real path (``judge_quality``: one
Benjamini-Hochberg family per report, then the floors), and the scenarios through the real ``scan``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
from scipy import stats

from evolution.stats.binning import Tally
from evolution.stats.drift import Baseline, DriftConfig, WindowAccumulator, build_baseline, scan
from evolution.stats.drift_models import FeatureBaseline
from evolution.stats.quality import (
    judge_quality,
    missing_rate_test,
    out_of_range_test,
    stuck_test,
    unseen_categories_test,
)
from evolution.stats.quality_models import FeatureQuality, QualityCheck, QualityConfig, QualityResult

CFG = DriftConfig()


def _check(result: QualityResult | None, feature: str, check: str) -> QualityCheck:
    assert result is not None
    (found,) = [c for c in result.checks if c.feature == feature and c.check == check]
    return found


def _numeric_feature(n: int = 10_000, outside: int = 20, missing: int = 0) -> FeatureBaseline:
    present = n - missing
    quality = FeatureQuality(
        present=present,
        distinct=present,
        singletons=present,
        lo=-3.0,
        hi=3.0,
        below=outside // 2,
        above=outside - outside // 2,
    )
    third = present // 3
    counts = [third, third, present - 2 * third, missing]
    return FeatureBaseline(
        name="x",
        kind="numeric",
        edges=[-0.4, 0.4],
        counts=counts,
        n=n,
        missing_rate=missing / n,
        quality=quality,
    )


def _judge(f: FeatureBaseline, window: list[int], tally: Tally) -> QualityResult:
    return judge_quality([f], {f.name: np.asarray(window)}, {f.name: tally}, CFG)


# ------------------------------------------------------------------------------------------------------------
# Reference values (section 3), scipy as the reference.


def test_out_of_range_reference_values_match_scipy_and_only_k_50_fires() -> None:
    p50, pi0 = out_of_range_test(50, 1000, 20, 10_000)
    assert pi0 == pytest.approx(0.00204979502, rel=1e-9)
    assert pi0 == (20 + 0.5) / (10_000 + 1)
    assert p50 == pytest.approx(stats.binom.sf(49, 1000, pi0), rel=1e-9)
    assert p50 == pytest.approx(5.392509832e-51, rel=1e-9)
    p4, _ = out_of_range_test(4, 1000, 20, 10_000)
    assert p4 == pytest.approx(stats.binom.sf(3, 1000, pi0), rel=1e-9)
    assert p4 == pytest.approx(0.1517915509, rel=1e-9)

    f = _numeric_feature()
    fired = _check(_judge(f, [300, 400, 300, 0], Tally(above=50, heavy=[], others=None)), "x", "out_of_range")
    assert fired.status == "alert" and (fired.k, fired.m) == (50, 1000)
    assert fired.p_value == pytest.approx(5.392509832e-51, rel=1e-9)
    assert fired.floor == pytest.approx(max(0.01, 5 * pi0)) and fired.effect == 0.05
    assert fired.direction == "above" and "above the usual maximum of 3" in fired.description
    quiet = _check(_judge(f, [300, 400, 300, 0], Tally(above=4, heavy=[], others=None)), "x", "out_of_range")
    assert quiet.status == "ok" and quiet.p_value == pytest.approx(0.1517915509, rel=1e-9)


def test_missing_rate_reference_values_match_scipy_and_only_120_of_1000_fires() -> None:
    z, p = missing_rate_test(100, 10_000, 120, 1000)
    assert z == pytest.approx(23.690177074, rel=1e-9)
    assert p == pytest.approx(stats.norm.sf(z), rel=1e-9)
    assert p == pytest.approx(2.2762598e-124, rel=1e-7)
    z15, p15 = missing_rate_test(100, 10_000, 15, 1000)
    assert z15 == pytest.approx(1.4821877175, rel=1e-9)
    assert p15 == pytest.approx(0.0691451769, rel=1e-8)

    f = _numeric_feature(missing=100)
    fired = _check(_judge(f, [300, 300, 280, 120], Tally(heavy=[], others=None)), "x", "missing_rate")
    assert fired.status == "alert" and (fired.k, fired.m) == (120, 1000)
    assert fired.z == pytest.approx(23.690177074, rel=1e-9) and fired.effect == pytest.approx(0.11)
    assert fired.description.startswith("12.0 % of x values are missing, against 1.0 %")
    quiet = _check(_judge(f, [300, 400, 285, 15], Tally(heavy=[], others=None)), "x", "missing_rate")
    assert quiet.status == "ok" and quiet.p_value == pytest.approx(0.0691451769, rel=1e-8)


def test_missing_rate_floor_is_a_setting() -> None:
    f = _numeric_feature(missing=100)
    strict = CFG.model_copy(update={"quality": QualityConfig(missing_rate_min_increase=0.20)})
    result = judge_quality(
        [f], {"x": np.array([300, 300, 280, 120])}, {"x": Tally(heavy=[], others=None)}, strict
    )
    check = _check(result, "x", "missing_rate")
    assert check.p_value is not None and check.p_value < 1e-100 and check.status == "ok"  # 11 points < 20


def test_unseen_categories_reference_value_matches_scipy_and_fires() -> None:
    p, pi_u = unseen_categories_test(80, 1000, 30, 10_000)
    assert pi_u == 0.003
    assert p == pytest.approx(stats.binom.sf(79, 1000, 0.003), rel=1e-9)
    assert p == pytest.approx(5.240305506e-84, rel=1e-9)
    assert unseen_categories_test(0, 1000, 0, 10_000)[1] == 0.5 / 10_000  # no singletons: pi_u = 0.5/n

    seen = [f"s{i}" for i in range(30)] + ["a", "b"]
    quality = FeatureQuality(
        present=10_000,
        distinct=32,
        singletons=30,
        seen=sorted(seen),
        seen_counts=[5000 if s == "a" else 4970 if s == "b" else 1 for s in sorted(seen)],
    )
    f = FeatureBaseline(
        name="c", kind="categorical", categories=["a", "b"], counts=[5000, 4970, 30, 0], n=10_000,
        missing_rate=0.0, quality=quality,
    )  # fmt: skip
    result = judge_quality(
        [f], {"c": np.array([470, 450, 80, 0])}, {"c": Tally(unseen=80, others={"new": 80})}, CFG
    )
    check = _check(result, "c", "unseen_categories")
    assert check.status == "alert" and (check.k, check.m) == (80, 1000)
    assert check.p_value == pytest.approx(5.240305506e-84, rel=1e-9) and check.examples == ["new"]


def test_stuck_p_value_matches_scipy() -> None:
    p, pi = stuck_test(960, 1000, 1000, 10_000)
    assert pi == (1000 + 0.5) / 10_001
    assert p == pytest.approx(stats.binom.sf(959, 1000, pi), rel=1e-9)


def test_free_text_column_is_not_measured_never_psi_0_ok() -> None:
    rng = np.random.default_rng(8)
    notes = np.array([f"note {i}" for i in range(5000)], dtype=object)  # every baseline value distinct
    baseline = build_baseline({"note": notes, "x": rng.standard_normal(5000)})
    result = scan(
        baseline, {"note": np.array([f"other {i}" for i in range(800)]), "x": rng.standard_normal(800)}
    )
    drift = result.features[0]
    assert drift.status == "not_measured" and drift.psi is None and drift.p_value is None
    assert drift.reason is not None and drift.reason.startswith("high_cardinality")
    unseen = _check(result.quality, "note", "unseen_categories")
    assert unseen.status == "not_measured" and unseen.reason == "high_cardinality"
    assert "free text or an identifier" in unseen.description
    assert (
        result.level == "ok"
    )  # the measured feature decides the level; the free text neither helps nor hides


# ------------------------------------------------------------------------------------------------------------
# Null calibration and power (section 3): 2,000 windows, counted with numpy in bulk, judged by the real code.

WINDOWS, N_BASE, M_WIN, MISSING = 2000, 10_000, 1000, 0.02
LABELS = np.array(["loam", "clay", "sand", "silt", "peat"])
SHARES = np.array([0.4, 0.25, 0.2, 0.1, 0.05])


def _null_columns(rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for j in range(14):
        x = rng.normal(10.0 * j, 1.0 + j, rows)
        x[rng.uniform(size=rows) < MISSING] = np.nan
        cols[f"x{j:02d}"] = x
    for j in range(6):
        c = LABELS[rng.choice(LABELS.size, rows, p=SHARES)].astype(object)
        c[rng.uniform(size=rows) < MISSING] = None
        cols[f"c{j}"] = c
    return cols


def _bincount_rows(codes: np.ndarray, bins: int) -> np.ndarray:
    rows = codes.shape[0]
    flat = codes + bins * np.arange(rows)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * bins).reshape(rows, bins)


def _bulk_windows(
    baseline: Baseline, rng: np.random.Generator, outlier: tuple[str, float] | None = None
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, Tally]], dict[str, np.ndarray]]:
    """Per window: each feature's bin counts and Tally, as ``WindowAccumulator`` would count them; and the raw
    window matrices, to check that on a few windows."""
    counts: dict[str, np.ndarray] = {}
    tallies: dict[str, list[Tally]] = {}
    raw: dict[str, np.ndarray] = {}
    for f in baseline.features:
        q = f.quality
        assert q is not None
        missing = rng.random((WINDOWS, M_WIN), dtype=np.float32) < MISSING
        if f.kind == "numeric":
            j = int(f.name[1:])
            x = 10.0 * j + (1.0 + j) * rng.standard_normal((WINDOWS, M_WIN), dtype=np.float32).astype(
                np.float64
            )
            x[missing] = np.nan
            if outlier is not None and f.name == outlier[0]:  # 5 % of the values at 100x the baseline maximum
                x[:, :50] = 100.0 * outlier[1]
                missing = np.isnan(x)
            assert not q.heavy_values and q.lo is not None and q.hi is not None
            codes = np.zeros(x.shape, dtype=np.int64)
            for e in f.edges:  # bin index: the number of edges at or below x
                codes += x >= e
            codes[missing] = len(f.edges) + 1
            counts[f.name] = _bincount_rows(codes, len(f.counts))
            below, above = (x < q.lo).sum(axis=1), (x > q.hi).sum(axis=1)
            tallies[f.name] = [Tally(int(b), int(a), 0, [], None) for b, a in zip(below, above, strict=True)]
            raw[f.name] = x
        else:
            assert f.categories == sorted(LABELS.tolist(), key=lambda c: -SHARES[LABELS.tolist().index(c)])
            codes = rng.choice(LABELS.size, (WINDOWS, M_WIN), p=SHARES)  # category i in the order kept
            codes[missing] = len(f.categories) + 1
            counts[f.name] = _bincount_rows(codes, len(f.counts))
            tallies[f.name] = [Tally(others={}) for _ in range(WINDOWS)]
            raw[f.name] = codes
    per_window_counts = [{name: c[i] for name, c in counts.items()} for i in range(WINDOWS)]
    per_window_tallies = [{name: t[i] for name, t in tallies.items()} for i in range(WINDOWS)]
    return per_window_counts, per_window_tallies, raw


def _window_columns(baseline: Baseline, raw: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for f in baseline.features:
        if f.kind == "numeric":
            cols[f.name] = raw[f.name][i]
        else:
            labels = np.array([*f.categories, "unused", None], dtype=object)
            cols[f.name] = labels[raw[f.name][i]]
    return cols


@pytest.fixture(scope="module")
def null_world() -> tuple[Baseline, dict[str, np.ndarray]]:
    columns = _null_columns(np.random.default_rng(1606), N_BASE)
    baseline = build_baseline(columns)
    assert sum(f.kind == "categorical" for f in baseline.features) == 6
    return baseline, columns


JUDGED = 100  # windows judged one by one by the real code; all 2,000 are bounded in bulk below


def _stack(counts: list[dict[str, np.ndarray]], name: str) -> np.ndarray:
    return np.stack([c[name] for c in counts])


def _floor_passes(
    baseline: Baseline, counts: list[dict[str, np.ndarray]], tallies: list[dict[str, Tally]]
) -> np.ndarray:
    """Per window: whether any check's effect passes its floor, a condition every alert needs (so the share of such
    windows bounds the share that fire from above)."""
    qc = baseline.config.quality
    passes = np.zeros(WINDOWS, dtype=bool)
    for f in baseline.features:
        q = f.quality
        assert q is not None
        c = _stack(counts, f.name)
        rows = c.sum(axis=1)
        present = rows - c[:, -1]
        passes |= c[:, -1] / rows - f.counts[-1] / f.n >= qc.missing_rate_min_increase
        if f.kind == "numeric":
            outside = np.array([t[f.name].below + t[f.name].above for t in tallies])
            pi0 = (q.outside + 0.5) / (q.present + 1)
            floor = max(qc.out_of_range_min_share, qc.out_of_range_baseline_multiple * pi0)
            passes |= outside / present >= floor
            passes |= c[:, :-1].max(axis=1) / present >= qc.stuck_min_share
        else:
            assert all(t[f.name].others == {} for t in tallies)  # every value is a kept category
            unseen = np.array([t[f.name].unseen for t in tallies])
            passes |= unseen / present >= qc.unseen_min_share
            passes |= c[:, :-2].max(axis=1) / present >= qc.stuck_min_share
    return passes


def _bulk(
    baseline: Baseline, outlier: tuple[str, float] | None, seed: int
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, Tally]], list[QualityResult]]:
    counts, tallies, raw = _bulk_windows(baseline, np.random.default_rng(seed), outlier)
    for i in range(3):  # the bulk counting is the scan's counting
        assert scan(baseline, _window_columns(baseline, raw, i)).quality == judge_quality(
            baseline.features, counts[i], tallies[i], baseline.config
        )
    judged = [judge_quality(baseline.features, counts[i], tallies[i], baseline.config) for i in range(JUDGED)]
    return counts, tallies, judged


def test_null_windows_fire_no_quality_check_in_more_than_1_percent(
    null_world: tuple[Baseline, dict[str, np.ndarray]],
) -> None:
    baseline = null_world[0]
    counts, tallies, judged = _bulk(baseline, None, seed=7)
    passes = _floor_passes(baseline, counts, tallies)
    fired = np.array([r.level == "alert" for r in judged])
    assert not np.any(fired & ~passes[:JUDGED])  # no alert without its floor: the bound below is a bound
    assert fired.mean() <= 0.01
    assert passes.mean() <= 0.01  # over all 2,000 windows, an upper bound on the share that fire


def test_five_percent_at_100x_the_maximum_fires_out_of_range_in_99_percent(
    null_world: tuple[Baseline, dict[str, np.ndarray]],
) -> None:
    baseline, columns = null_world
    counts, tallies, judged = _bulk(baseline, ("x03", float(np.nanmax(columns["x03"]))), seed=8)
    f = baseline.feature("x03")
    assert f.quality is not None
    c = _stack(counts, "x03")
    m = c.sum(axis=1) - c[:, -1]
    k = np.array([t["x03"].below + t["x03"].above for t in tallies])
    pi0 = (f.quality.outside + 0.5) / (f.quality.present + 1)
    p = stats.binom.sf(k - 1, m, pi0)  # scipy as the reference
    family = sum(ch.p_value is not None for ch in judged[0].checks)
    # BH adjusts p to at most p * family: below alpha with the floor passed, the check must fire.
    sure = (p * family < baseline.config.alpha) & (k / m >= max(0.01, 5 * pi0))
    fired = np.array(
        [any(a.feature == "x03" and a.check == "out_of_range" for a in r.alerts) for r in judged]
    )
    assert np.all(fired[sure[:JUDGED]])
    assert sure.mean() >= 0.99 and fired.mean() >= 0.99


# ------------------------------------------------------------------------------------------------------------
# The field failures, through the real scan.


def test_sensor_writing_9999_reads_psi_ok_but_out_of_range_fires() -> None:
    """The issue's motivating case: 5 % at 9999 hides in the open end bin (PSI ~ 0.03, ok)."""
    rng = np.random.default_rng(16)
    baseline = build_baseline({"rain_mm": rng.gamma(2.0, 10.0, 10_000)})
    window = rng.gamma(2.0, 10.0, 1000)
    window[:50] = 9999.0
    result = scan(baseline, {"rain_mm": window})
    drift = result.features[0]
    assert drift.psi is not None and drift.psi < 0.05  # far under the 0.10 a warning needs
    assert drift.status == "ok" and result.level == "ok"
    check = _check(result.quality, "rain_mm", "out_of_range")
    assert check.status == "alert" and check.k is not None and check.k >= 50 and check.direction == "above"
    assert check.p_adjusted is not None and check.p_adjusted < 1e-30
    assert check.effect is not None and 0.05 <= check.effect < 0.06
    assert re.match(r"5\.\d % of rain_mm values are above the usual maximum of \d", check.description)
    assert result.quality is not None and result.quality.level == "alert"


def test_stuck_continuous_sensor_fires_and_names_the_band() -> None:
    rng = np.random.default_rng(17)
    baseline = build_baseline({"soil_temp": rng.normal(18.0, 4.0, 10_000)})
    window = rng.normal(18.0, 4.0, 1000)
    window[:970] = 21.3
    check = _check(scan(baseline, {"soil_temp": window}).quality, "soil_temp", "stuck")
    assert check.status == "alert" and check.k is not None and check.k >= 970 and check.value is not None
    lo, hi = (float(v) for v in check.value.split(" to "))
    assert lo <= 21.3 < hi
    assert "97." in check.description and "stuck sensor" in check.description


def test_stuck_categorical_value_fires_but_a_usual_majority_does_not() -> None:
    rng = np.random.default_rng(18)
    base = rng.choice(np.array(["dry", "wet", "flooded"]), 10_000, p=[0.5, 0.4, 0.1]).astype(object)
    baseline = build_baseline({"field_state": base})
    stuck = np.array(["flooded"] * 990 + ["dry"] * 10, dtype=object)
    check = _check(scan(baseline, {"field_state": stuck}).quality, "field_state", "stuck")
    assert check.status == "alert" and check.value == "flooded" and (check.k, check.m) == (990, 1000)
    assert check.p_value == pytest.approx(
        stats.binom.sf(989, 1000, (base == "flooded").sum() / 10_001 + 0.5 / 10_001)
    )
    usual = rng.choice(np.array(["dry", "wet", "flooded"]), 1000, p=[0.5, 0.4, 0.1]).astype(object)
    assert _check(scan(baseline, {"field_state": usual}).quality, "field_state", "stuck").status == "ok"


def test_a_dry_spell_counts_the_heavy_zero_exactly_and_light_rain_is_not_stuck() -> None:
    rng = np.random.default_rng(19)
    rain = np.where(rng.uniform(size=10_000) < 0.7, 0.0, rng.gamma(1.0, 8.0, 10_000))
    baseline = build_baseline({"rain_mm": rain})
    assert baseline.features[0].quality is not None and baseline.features[0].quality.heavy_values == [0.0]
    light = np.where(rng.uniform(size=1000) < 0.6, 0.0, rng.uniform(0.01, 0.2, 1000))  # same low band as 0
    check = _check(scan(baseline, {"rain_mm": light}).quality, "rain_mm", "stuck")
    assert check.status == "ok" and check.value == "0" and check.k == int((light == 0).sum())
    dry = np.zeros(1000)
    check = _check(scan(baseline, {"rain_mm": dry}).quality, "rain_mm", "stuck")
    assert check.status == "alert" and check.value == "0" and check.k == 1000


def test_renamed_category_fires_unseen_categories_with_examples() -> None:
    rng = np.random.default_rng(20)
    soils = np.array(["Loam", "Clay", "Sand"])
    baseline = build_baseline({"soil": rng.choice(soils, 10_000).astype(object)})
    window = rng.choice(soils, 1000).astype(object)
    window[window == "Loam"] = "loam"  # a feed that lower-cased one category
    result = scan(baseline, {"soil": window})
    check = _check(result.quality, "soil", "unseen_categories")
    assert check.status == "alert" and check.k == int((window == "loam").sum()) and check.examples == ["loam"]
    assert "never seen in the baseline, e.g. 'loam'" in check.description
    usual = _check(
        scan(baseline, {"soil": rng.choice(soils, 1000).astype(object)}).quality, "soil", "unseen_categories"
    )
    assert usual.status == "ok" and usual.k == 0


def test_small_windows_report_insufficient_data_for_the_checks() -> None:
    rng = np.random.default_rng(21)
    baseline = build_baseline({"x": rng.standard_normal(1000)})
    window = rng.standard_normal(200)
    window[:160] = np.nan  # 200 rows, 40 non-missing
    result = scan(baseline, {"x": window})
    assert _check(result.quality, "x", "out_of_range").status == "insufficient_data"
    assert _check(result.quality, "x", "stuck").status == "insufficient_data"
    assert _check(result.quality, "x", "missing_rate").status == "alert"  # 200 rows are enough for that one


def test_quality_counts_add_up_over_chunks_in_any_split() -> None:
    rng = np.random.default_rng(22)
    base = {"x": rng.normal(size=5000), "c": rng.choice(["a", "b", "c"], 5000).astype(object)}
    baseline = build_baseline(base)
    window = {"x": rng.normal(0.5, 1.0, 3000), "c": rng.choice(["a", "b", "zz", "yy"], 3000).astype(object)}
    window["x"][:200] = 50.0
    whole = scan(baseline, window)
    acc = WindowAccumulator(baseline)
    for lo, hi in ((0, 7), (7, 1500), (1500, 3000)):
        acc.update({k: v[lo:hi] for k, v in window.items()})
    assert acc.result() == whole
    assert _check(whole.quality, "c", "unseen_categories").examples == ["yy", "zz"] or _check(
        whole.quality, "c", "unseen_categories"
    ).examples == ["zz", "yy"]


def test_drift_decisions_are_the_same_with_the_checks_on() -> None:
    """The quality family is apart: the drift verdicts equal those of a baseline without the quality data."""
    rng = np.random.default_rng(23)
    baseline = build_baseline({"x": rng.normal(size=5000), "y": rng.normal(size=5000)})
    bare = _without_quality(baseline)
    window = {"x": rng.normal(0.3, 1.0, 1000), "y": rng.normal(size=1000)}
    window["y"][:100] = 1e6  # a quality alert on y must not move x's or y's drift verdict
    with_checks, without = scan(baseline, window), scan(bare, window)
    assert with_checks.features == without.features and with_checks.level == without.level


# ------------------------------------------------------------------------------------------------------------
# Baselines made before the checks.


def _strip(document: Any) -> Any:
    if isinstance(document, dict):
        return {k: _strip(v) for k, v in document.items() if k != "quality"}
    if isinstance(document, list):
        return [_strip(v) for v in document]
    return document


def _without_quality(baseline: Baseline) -> Baseline:
    return Baseline.model_validate_json(json.dumps(_strip(json.loads(baseline.model_dump_json()))))


def test_a_baseline_serialised_before_the_checks_loads_and_says_it_lacks_their_data() -> None:
    rng = np.random.default_rng(24)
    cols = {"x": rng.normal(size=3000), "c": rng.choice(["u", "v", "w"], 3000).astype(object)}
    baseline = build_baseline(cols)
    old_json = json.dumps(_strip(json.loads(baseline.model_dump_json())))
    assert '"quality"' not in old_json
    old = Baseline.model_validate_json(old_json)
    assert all(f.quality is None for f in old.features) and old.config == DriftConfig()
    window = {"x": rng.normal(size=500), "c": rng.choice(["u", "v", "w"], 500).astype(object)}
    result = scan(old, window)
    assert result.features == scan(baseline, window).features
    assert result.quality is not None
    for check in result.quality.checks:
        if check.check == "missing_rate":  # needs only the counts every baseline has
            assert check.status == "ok" and check.p_value is not None
        else:
            assert check.status == "not_measured" and check.reason == "baseline_lacks_quality_data"
            assert "made before the data-quality checks" in check.description
