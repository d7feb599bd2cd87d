"""Streaming: chunk counts add up, memory stays bounded by one block, a bad chunk leaves no trace."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest

from evolution.errors import InvalidInput
from evolution.stats.drift import WindowAccumulator, build_baseline, scan
from evolution.stats.moments import merge, moments_of


def _chunks(rng: np.random.Generator, count: int, size: int) -> Iterator[dict[str, np.ndarray]]:
    for _ in range(count):
        yield {"x": rng.normal(0.1, 1.0, size), "c": rng.choice(np.array(["a", "b", "c", "d"]), size)}


def test_chunked_window_equals_the_concatenated_window() -> None:
    rng = np.random.default_rng(1)
    baseline = build_baseline({"x": rng.standard_normal(5000), "c": rng.choice(["a", "b", "c"], 5000)})
    chunks = list(_chunks(np.random.default_rng(2), 10, 20_000))
    acc = WindowAccumulator(baseline)
    for chunk in chunks:
        acc.update(chunk)
    whole = scan(baseline, {k: np.concatenate([c[k] for c in chunks]) for k in ("x", "c")})
    assert acc.result() == whole
    assert whole.features[0].m == 200_000


def test_result_can_be_read_between_chunks() -> None:
    rng = np.random.default_rng(3)
    baseline = build_baseline({"x": rng.standard_normal(1000)})
    acc = WindowAccumulator(baseline)
    acc.update({"x": rng.standard_normal(30)})
    assert acc.result().level == "insufficient_data"
    acc.update({"x": rng.standard_normal(30)})
    assert acc.result().features[0].m == 60 and acc.result().features[0].psi is not None


def test_scanning_a_large_chunk_allocates_only_a_block_of_scratch() -> None:
    rng = np.random.default_rng(4)
    baseline = build_baseline({"x": rng.standard_normal(10_000)})
    big = {"x": rng.standard_normal(2_000_000)}  # 16 MB, allocated before tracing starts
    acc = WindowAccumulator(baseline)
    tracemalloc.start()
    try:
        acc.update(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # well under 1 MB against a 16 MB chunk
    assert acc.result().features[0].m == 2_000_000


def test_a_bad_chunk_leaves_the_counts_untouched() -> None:
    rng = np.random.default_rng(5)
    baseline = build_baseline({"x": rng.standard_normal(1000), "c": rng.choice(["a", "b"], 1000)})
    acc = WindowAccumulator(baseline)
    acc.update({"x": rng.standard_normal(100), "c": rng.choice(["a", "b"], 100)})
    before = acc.window_counts()
    with pytest.raises(InvalidInput, match="'c'"):
        acc.update({"x": rng.standard_normal(100)})
    bad = np.array([1.0, "oops", 3.0], dtype=object)
    with pytest.raises(InvalidInput, match=r"feature 'x'.*'oops'"):
        acc.update({"x": bad, "c": np.array(["a", "b", "a"], dtype=object)})
    assert acc.window_counts() == before


def test_error_moments_merge_like_one_batch() -> None:
    rng = np.random.default_rng(6)
    x = 1000.0 + 0.01 * rng.standard_normal(30_000)  # where sum-of-squares formulas cancel
    merged = moments_of(x[:10])
    for lo in range(10, x.size, 7_001):
        merged = merge(merged, moments_of(x[lo : lo + 7_001]))
    assert merged.n == x.size
    assert merged.mean == pytest.approx(x.mean(), rel=1e-14)
    assert merged.variance == pytest.approx(x.var(ddof=1), rel=1e-9)


def test_streamed_mae_equals_the_one_shot_mae() -> None:
    rng = np.random.default_rng(7)
    baseline = build_baseline({"x": rng.standard_normal(2000)}, abs_errors=np.abs(rng.normal(size=2000)))
    x = rng.standard_normal(3000)
    e = np.abs(rng.normal(scale=1.1, size=3000))
    acc = WindowAccumulator(baseline)
    for lo in range(0, 3000, 700):
        acc.update({"x": x[lo : lo + 700]}, e[lo : lo + 700])
    one = scan(baseline, {"x": x}, e).mae
    streamed = acc.result().mae
    assert one is not None and streamed is not None
    assert streamed.window_mae == pytest.approx(one.window_mae, rel=1e-13)
    assert streamed.z == pytest.approx(one.z, rel=1e-10)


def test_float32_and_integer_columns_bin_like_float64() -> None:
    rng = np.random.default_rng(8)
    base = rng.integers(0, 1000, 5000)
    baseline = build_baseline({"x": base})
    window = rng.integers(0, 1200, 800)
    as64 = scan(baseline, {"x": window.astype(np.float64)}).features[0]
    assert scan(baseline, {"x": window}).features[0] == as64
    assert scan(baseline, {"x": window.astype(np.float32)}).features[0] == as64


def test_non_contiguous_columns_are_read_in_place() -> None:
    rng = np.random.default_rng(9)
    table = rng.standard_normal((4000, 3))  # row-major: each column is a strided view
    baseline = build_baseline({"x": table[:, 1]})
    window = rng.standard_normal((500, 3))
    assert scan(baseline, {"x": window[:, 1]}) == scan(baseline, {"x": np.ascontiguousarray(window[:, 1])})


def test_abs_errors_need_a_baseline_with_error_statistics() -> None:
    baseline = build_baseline({"x": np.arange(100.0)})
    with pytest.raises(InvalidInput, match="no error statistics"):
        scan(baseline, {"x": np.arange(100.0)}, abs_errors=np.ones(100))


def test_extreme_finite_values_give_a_valid_storable_baseline() -> None:
    x = np.concatenate([np.full(50, -1.7e308), np.full(50, 1.7e308), np.arange(100.0)])
    baseline = build_baseline({"x": x})
    f = baseline.features[0]
    assert all(np.isfinite(f.edges)) and sum(f.counts) == 200
    assert type(baseline).model_validate_json(baseline.model_dump_json()) == baseline
    assert scan(baseline, {"x": x}).features[0].psi == 0.0
