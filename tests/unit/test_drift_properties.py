"""Property tests (hypothesis): PSI >= 0, PSI = 0 for identical counts, invariance to row order, chunking."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from evolution.stats.divergence import kl_shares, psi_shares
from evolution.stats.drift import (
    WindowAccumulator,
    benjamini_hochberg,
    build_baseline,
    kl_divergence,
    psi,
    scan,
    smoothed_shares,
)

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)

counts_pair = st.integers(min_value=2, max_value=12).flatmap(
    lambda k: st.tuples(
        st.lists(st.integers(0, 10_000), min_size=k, max_size=k).filter(lambda c: sum(c) > 0),
        st.lists(st.integers(0, 10_000), min_size=k, max_size=k).filter(lambda c: sum(c) > 0),
    )
)

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, 1.0, -2.5, 3.25]),  # ties, so edges and categorical-by-value both occur
)


@SETTINGS
@given(counts_pair)
def test_psi_and_kl_are_non_negative(pair: tuple[list[int], list[int]]) -> None:
    base, window = pair
    assert psi(base, window) >= 0.0
    assert kl_divergence(base, window) >= 0.0


@SETTINGS
@given(counts_pair)
def test_psi_is_symmetric_and_the_sum_of_both_kls(pair: tuple[list[int], list[int]]) -> None:
    base, window = pair
    assert np.isclose(psi(base, window), psi(window, base), rtol=1e-12, atol=1e-15)
    keep = [i for i in range(len(base)) if base[i] or window[i]]
    if len(keep) >= 2:
        p = smoothed_shares([base[i] for i in keep])
        q = smoothed_shares([window[i] for i in keep])
        assert np.isclose(psi(base, window), kl_shares(p, q) + kl_shares(q, p), rtol=1e-12, atol=1e-15)
        assert np.isclose(psi(base, window), psi_shares(p, q), rtol=1e-12, atol=1e-15)


@SETTINGS
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=12).filter(lambda c: sum(c) > 0))
def test_psi_is_zero_for_identical_counts(counts: list[int]) -> None:
    assert psi(counts, counts) == 0.0
    assert kl_divergence(counts, counts) == 0.0


@SETTINGS
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40))
def test_bh_adjusted_values_bound_the_raw_ones_and_keep_their_order(p: list[float]) -> None:
    adj = benjamini_hochberg(p)
    assert np.all(adj >= np.asarray(p) - 1e-15) and np.all(adj <= 1.0)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adj[order]) >= -1e-15)


@st.composite
def dataset(draw: st.DrawFn) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[int], int]:
    base_x = draw(st.lists(values, min_size=60, max_size=200))
    win_x = draw(st.lists(values, min_size=50, max_size=200))
    cats = st.sampled_from(["a", "b", "c", "zz", None])
    base_c = draw(st.lists(cats, min_size=len(base_x), max_size=len(base_x)))
    win_c = draw(st.lists(cats, min_size=len(win_x), max_size=len(win_x)))
    cuts = sorted(draw(st.lists(st.integers(0, len(win_x)), max_size=6)))
    seed = draw(st.integers(0, 2**32 - 1))
    base = {"x": np.array(base_x), "c": np.array(base_c, dtype=object)}
    window = {"x": np.array(win_x), "c": np.array(win_c, dtype=object)}
    return base, window, cuts, seed


@SETTINGS
@given(dataset())
def test_scan_is_invariant_to_row_order_and_chunking(data: tuple) -> None:
    base, window, cuts, seed = data
    baseline = build_baseline(base)
    whole = scan(baseline, window)

    perm = np.random.default_rng(seed).permutation(len(window["x"]))
    shuffled = scan(baseline, {k: v[perm] for k, v in window.items()})
    assert shuffled == whole

    acc = WindowAccumulator(baseline)
    bounds = [0, *cuts, len(window["x"])]
    for lo, hi in itertools.pairwise(bounds):
        acc.update({k: v[lo:hi] for k, v in window.items()})
    assert acc.result() == whole


@SETTINGS
@given(dataset())
def test_baseline_counts_every_row_exactly_once(data: tuple) -> None:
    base, window, _, _ = data
    baseline = build_baseline(base)
    for f in baseline.features:
        assert sum(f.counts) == f.n == len(base[f.name])
    for d in scan(baseline, window).features:
        assert sum(d.window_counts) == d.m == len(window[d.feature])
