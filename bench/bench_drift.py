"""Drift-scan benchmark (prints figures; not a test).

    python bench/bench_drift.py [--rows 1000000] [--features 20] [--stream-rows 10000000]

Figures, all measured in this run on this machine:
  * rows x features per second of our scan of a shifted window against a frozen baseline, drift statistics and the
    data-quality checks of statistics.md 1b together (they are counted in the same pass);
  * the same bytes through ``numpy.sum`` (the memory-bandwidth reference) and our time as a multiple of it
    (target: within 10x);
  * ``searchsorted`` + ``bincount`` on row-major data, the approach the column-major kernel replaces;
  * Evidently's ``DataDriftPreset`` with the PSI method on the same data, and our speed-up (target >= 300x),
    when Evidently is installed (``pip install -e .[bench]``, it needs pandas<3); skipped otherwise;
  * peak memory allocated by the scan above the resident data (target <= 10 % of it), and the peak of a
    ``--stream-rows`` window scanned in chunks against a ``--rows`` window (target <= 1.5x).
Peak memory is traced with ``tracemalloc`` (numpy reports its buffers to it).
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from evolution.stats.drift import WindowAccumulator, build_baseline, scan

SEED = 20240601


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def traced_peak(fn: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def make_columns(rng: np.random.Generator, rows: int, features: int, shift: float) -> dict[str, np.ndarray]:
    return {f"f{j:02d}": rng.normal(shift * (j % 3), 1.0 + 0.1 * (j % 2), rows) for j in range(features)}


def chunks(rows: int, features: int, chunk_rows: int) -> Iterator[dict[str, np.ndarray]]:
    rng = np.random.default_rng(SEED + 7)
    for start in range(0, rows, chunk_rows):
        yield make_columns(rng, min(chunk_rows, rows - start), features, 0.05)


def evidently_seconds(base: dict[str, np.ndarray], cur: dict[str, np.ndarray]) -> tuple[float, int] | str:
    try:
        import pandas as pd
        from evidently import Report
        from evidently.presets import DataDriftPreset
    except Exception as exc:  # any import failure means: not installed here
        return f"skipped: Evidently not importable ({type(exc).__name__}: {exc}); pip install -e .[bench]"
    ref_df, cur_df = pd.DataFrame(base), pd.DataFrame(cur)
    report = Report([DataDriftPreset(method="psi")])

    def run() -> None:
        report.run(current_data=cur_df, reference_data=ref_df)

    seconds = best_of(run, 1)
    return seconds, traced_peak(run)


def bench_in_memory(args: argparse.Namespace) -> Any:
    """Scan speed and scan memory on a resident window; returns the baseline for the streaming figures."""
    rows, feats = args.rows, args.features
    cells = rows * feats
    rng = np.random.default_rng(SEED)
    base_cols = make_columns(rng, rows, feats, 0.0)
    cur_cols = make_columns(rng, rows, feats, 0.4)
    resident = sum(c.nbytes for c in cur_cols.values())
    print(
        f"data: {rows:,} rows x {feats} float64 features per window ({resident / 1e6:.0f} MB), column-major"
    )

    t_build = best_of(lambda: build_baseline(base_cols), 1)
    baseline = build_baseline(base_cols)
    print(f"build_baseline (one-off, sorts each column): {t_build:.2f} s")

    t_sum = best_of(lambda: [c.sum() for c in cur_cols.values()], args.repeats)
    t_scan = best_of(lambda: scan(baseline, cur_cols), args.repeats)
    result = scan(baseline, cur_cols)
    statuses = {s: sum(f.status == s for f in result.features) for s in ("ok", "warn", "alert")}
    print(f"numpy sum over the same bytes:    {t_sum * 1e3:8.1f} ms  ({resident / t_sum / 1e9:.1f} GB/s)")
    print(
        f"our scan (PSI, KL, chi2, BH, 1b): {t_scan * 1e3:8.1f} ms  ({cells / t_scan / 1e6:,.0f} M cells/s)"
    )
    print(f"  scan / numpy sum:               {t_scan / t_sum:8.1f} x   (target <= 10x)")
    print(f"  verdicts on the shifted window (0, 0.4, 0.8 sd shifts): {statuses}, level {result.level}")
    quality = result.quality
    if quality is not None:
        fired = [f"{c.feature}:{c.check}" for c in quality.alerts]
        print(
            f"  data-quality checks: {len(quality.checks)}, level {quality.level}, alerts {fired or 'none'}"
        )

    row_major = np.column_stack(list(cur_cols.values()))
    edges = [np.asarray(f.edges) for f in baseline.features]

    def searchsorted_row_major() -> None:
        for j, e in enumerate(edges):
            np.bincount(np.searchsorted(e, row_major[:, j], side="right"), minlength=e.size + 1)

    t_ss = best_of(searchsorted_row_major, 1)
    print(f"searchsorted+bincount, row-major: {t_ss * 1e3:8.1f} ms  ({t_ss / t_sum:.0f}x numpy sum)")

    peak_scan = traced_peak(lambda: scan(baseline, cur_cols))
    print(
        f"peak memory of the scan above the resident window: {peak_scan / 1e6:.2f} MB "
        f"({100 * peak_scan / resident:.2f} % of {resident / 1e6:.0f} MB; target <= 10 %)"
    )

    if args.skip_evidently:
        print("Evidently: skipped (--skip-evidently)")
        return baseline
    ev = evidently_seconds(base_cols, cur_cols)
    if isinstance(ev, str):
        print(f"Evidently DataDriftPreset(method='psi'): {ev}")
    else:
        t_ev, peak_ev = ev
        print(
            f"Evidently DataDriftPreset(method='psi'): {t_ev:.2f} s, peak {peak_ev / 1e6:.0f} MB "
            f"({peak_ev / (2 * resident):.1f}x the two windows)"
        )
        print(f"  our speed-up over Evidently: {t_ev / t_scan:,.0f}x (target >= 300x)")
    return baseline


def bench_streaming(args: argparse.Namespace, baseline: Any) -> None:
    """Peak memory of a large window scanned in chunks against that of one resident window."""

    def scan_chunks(rows: int, chunk_rows: int) -> None:
        acc = WindowAccumulator(baseline)
        for chunk in chunks(rows, args.features, chunk_rows):
            acc.update(chunk)
            del chunk  # let the chunk go before the next one is generated
        acc.result()

    peak_one = traced_peak(lambda: scan_chunks(args.rows, args.rows))
    t0 = time.perf_counter()
    peak_stream = traced_peak(lambda: scan_chunks(args.stream_rows, args.chunk_rows))
    t_stream = time.perf_counter() - t0
    print(f"peak memory, {args.rows:,}-row window (generated and scanned): {peak_one / 1e6:.0f} MB")
    print(
        f"peak memory, {args.stream_rows:,}-row window in {args.chunk_rows:,}-row chunks: "
        f"{peak_stream / 1e6:.0f} MB = {peak_stream / peak_one:.2f}x (target <= 1.5x); "
        f"{t_stream:.1f} s including data generation"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--stream-rows", type=int, default=10_000_000)
    parser.add_argument("--chunk-rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-evidently", action="store_true")
    args = parser.parse_args()
    baseline = bench_in_memory(args)
    gc.collect()
    bench_streaming(args, baseline)


if __name__ == "__main__":
    main()
