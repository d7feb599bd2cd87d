"""`evolution drift ...` and `evolution canary ...`: the statistics engine from the command line.

``register`` mounts ``canary``; ``drift`` is mounted by orchestration_commands, which adds its ``scan``. Exit
codes: 0 whenever the command ran (drift or not), 2 for bad input, with a message that names the file or column.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from evolution.errors import InvalidInput
from evolution.progress import MeteredFile, ProgressMeter, metered

# numpy, scipy and pyarrow are imported by the commands that compute (`drift compare`, `canary plan`): the
# orchestration commands import this module for its drift group alone.
if TYPE_CHECKING:
    import numpy as np

    from evolution.stats.canary_plan import PlanResult, ScenarioPlan
    from evolution.stats.drift import DriftConfig, DriftResult

drift_app = typer.Typer(
    help=(
        "Compare a data window with a baseline: PSI, KL(current||baseline), chi-square p (BH-adjusted), and the "
        "data-quality checks (out of range, missing rate, unseen categories, stuck)."
    ),
    no_args_is_help=True,
)
canary_app = typer.Typer(
    help="Plan a canary: labels the mSPRT guard needs to promote or roll back (fixed-seed Monte Carlo).",
    no_args_is_help=True,
)

BAD_INPUT = 2


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=BAD_INPUT)


def _column_to_numpy(column: Any) -> np.ndarray:
    """A pyarrow column as float64 (numbers, booleans, times; null -> NaN) or objects (text; null -> None)."""
    import numpy as np
    import pyarrow as pa

    t = column.type
    if pa.types.is_dictionary(t):
        column = column.cast(t.value_type)
        t = column.type
    if pa.types.is_temporal(t):
        column = column.cast(pa.int64())
        t = column.type
    if pa.types.is_boolean(t):
        column = column.cast(pa.int8())
        t = column.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return np.asarray(column.cast(pa.float64()).to_numpy(), dtype=np.float64)
    return np.array(column.to_pylist(), dtype=object)


def read_columns(
    path: Path, names: list[str] | None, meter: ProgressMeter | None = None
) -> dict[str, np.ndarray]:
    """Read a CSV or Parquet file into named 1-D columns (only ``names`` when given).

    ``meter``: a task over the file's bytes (CSV) or rows (Parquet, read row group by row group).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not path.is_file():
        raise _fail(f"{path}: no such file")
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            table = pq.read_table(path) if meter is None else _read_parquet_metered(path, meter)
        elif path.suffix.lower() == ".csv" or suffixes.endswith(".csv.gz"):
            table = pacsv.read_csv(path) if meter is None else _read_csv_metered(path, meter)
        else:
            raise _fail(f"{path}: unknown format (expected .csv, .csv.gz, .parquet or .pq)")
    except (pa.ArrowInvalid, OSError) as exc:
        raise _fail(f"{path}: cannot be read: {exc}") from exc
    try:
        available = table.column_names
    except UnicodeDecodeError:  # pyarrow checks values as UTF-8 while reading, the header names only here
        raise _fail(f"{path}: its header is not UTF-8 text") from None
    wanted = names if names is not None else available
    absent = [n for n in wanted if n not in available]
    if absent:
        raise _fail(f"{path}: no column {', '.join(map(repr, absent))} (it has {', '.join(available)})")
    return {name: _column_to_numpy(table.column(name)) for name in wanted}


def _read_parquet_metered(path: Path, meter: ProgressMeter) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    groups = []
    with metered(meter, f"read {path.name}", parquet.metadata.num_rows) as advance:
        for i in range(parquet.num_row_groups):
            groups.append(parquet.read_row_group(i))
            advance(groups[-1].num_rows)
    return pa.concat_tables(groups) if groups else parquet.schema_arrow.empty_table()


def _read_csv_metered(path: Path, meter: ProgressMeter) -> Any:
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv

    with (
        metered(meter, f"read {path.name}", path.stat().st_size, "bytes") as advance,
        io.BufferedReader(MeteredFile(path, advance)) as handle,
    ):
        source: Any = handle
        if path.suffix.lower() == ".gz":
            source = pa.CompressedInputStream(pa.PythonFile(handle, mode="r"), "gzip")
        return pacsv.read_csv(source)


@drift_app.command("compare")
def compare(
    baseline: Annotated[Path, typer.Argument(help="baseline data, CSV or Parquet")],
    current: Annotated[Path, typer.Argument(help="current window, CSV or Parquet")],
    as_json: Annotated[bool, typer.Option("--json", help="print the result as canonical JSON")] = False,
    alpha: Annotated[float | None, typer.Option("--alpha", help="test level after BH (default 0.01)")] = None,
    features: Annotated[
        str | None, typer.Option("--features", help="comma-separated columns to compare (default: all)")
    ] = None,
    abs_error_column: Annotated[
        str | None,
        typer.Option(
            "--abs-error-column", help="column of the champion's absolute errors: adds the MAE test"
        ),
    ] = None,
) -> None:
    """Per-feature drift of CURRENT against BASELINE, then the data-quality checks that are not plainly ok.

    Exit 0 whatever the drift or the data quality; 2 on bad input. ``--json`` prints the whole result, the
    checks under ``quality``.
    """
    from evolution.canonical import canonical_json
    from evolution.cli.drift_output import compare_text
    from evolution.cli.progress import progress_meter
    from evolution.stats.drift import DriftConfig

    try:
        config = DriftConfig(alpha=alpha) if alpha is not None else DriftConfig()
    except ValueError as exc:
        raise _fail(f"--alpha: {exc}") from exc
    names = [n.strip() for n in features.split(",") if n.strip()] if features else None
    if names is not None and not names:
        raise _fail("--features: no column names given")
    if names is not None and abs_error_column is not None and abs_error_column not in names:
        names = [*names, abs_error_column]
    with progress_meter(as_json) as meter:
        result = _compare(baseline, current, names, abs_error_column, config, meter)
    if as_json:
        typer.echo(canonical_json(result.model_dump(mode="json")).decode())
    else:
        typer.echo(compare_text(result))


def _compare(
    baseline: Path,
    current: Path,
    names: list[str] | None,
    abs_error_column: str | None,
    config: DriftConfig,
    meter: ProgressMeter | None,
) -> DriftResult:
    """Read both files, fit the baseline, scan the current window; each a task of ``meter``."""
    from evolution.stats.drift import build_baseline, scan

    base_cols = read_columns(baseline, names, meter)
    if abs_error_column is not None and abs_error_column not in base_cols:
        raise _fail(f"{baseline}: no column {abs_error_column!r}")
    wanted = list(base_cols.keys())
    cur_cols = read_columns(current, wanted, meter)
    base_err = cur_err = None
    if abs_error_column is not None:
        base_err = base_cols.pop(abs_error_column)
        cur_err = cur_cols.pop(abs_error_column)
    if not base_cols:
        raise _fail(f"{baseline}: no feature columns to compare")
    try:
        ref = build_baseline(base_cols, abs_errors=base_err, config=config, meter=meter)
    except InvalidInput as exc:
        raise _fail(f"{baseline}: {exc}") from exc
    try:
        return scan(ref, cur_cols, abs_errors=cur_err, meter=meter)
    except InvalidInput as exc:
        raise _fail(f"{current}: {exc}") from exc


def _scenario_text(s: ScenarioPlan, unit: str) -> str:
    median = f"{s.median_labels:,}" if s.median_labels is not None else "not reached by N_max (under 50 %)"
    p90 = f"{s.p90_labels:,}" if s.p90_labels is not None else "not reached by N_max (under 90 %)"
    return (
        f"  P({s.intended} by N_max) = {s.probability:.1%}   wrong action {s.wrong_probability:.1%}\n"
        f"  median {unit} to {s.intended}: {median};  90th percentile: {p90}\n"
        f"  expected {unit} until the guard stops: {s.expected_labels:,.0f}"
    )


def _plan_text(p: PlanResult) -> str:
    mode = "paired (champion shadow-scores the canary traffic)" if p.paired else "unpaired"
    return "\n".join(
        [
            f"canary plan: sigma {p.sigma:g}, effect {p.effect:g} MAE, {mode}, alpha {p.alpha}, "
            f"N_max {p.n_max:,}",
            f"tau {p.tau:.4g} (n_opt {p.n_opt:,}), tau_harm {p.tau_harm:.4g} (n_opt {p.harm_n_opt:,})",
            f"promote a candidate better by {p.effect:g}:",
            _scenario_text(p.promote, p.labels_unit),
            f"roll back a candidate worse by {p.effect:g}:",
            _scenario_text(p.rollback, p.labels_unit),
            f"method: {p.method}",
        ]
    )


@canary_app.command("plan")
def plan(
    sigma: Annotated[
        float,
        typer.Option(
            "--sigma", help="sd of d = a - b per request (paired) or of one absolute error (unpaired)"
        ),
    ],
    effect: Annotated[
        float, typer.Option("--effect", help="MAE difference to detect (improvement and harm)")
    ],
    alpha: Annotated[float, typer.Option("--alpha", help="level of both sequential tests")] = 0.05,
    n_opt: Annotated[
        int, typer.Option("--n-opt", help="labels at which the promotion test is sharpest")
    ] = 10_000,
    harm_n_opt: Annotated[
        int, typer.Option("--harm-n-opt", help="labels at which the harm test is sharpest")
    ] = 500,
    n_max: Annotated[int, typer.Option("--n-max", help="labels after which the champion stays")] = 20_000,
    paired: Annotated[
        bool, typer.Option("--paired/--unpaired", help="paired (shadow-scored) or unpaired")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print canonical JSON")] = False,
) -> None:
    """Expected labels to promote a candidate better by EFFECT and to roll back one worse by EFFECT.

    Computed by Monte Carlo (2,000 Gaussian paths, fixed seed, so the same inputs print the same numbers) with
    the guard's own decision rule; V = sigma^2/n is taken as known, which is accurate once n is in the
    hundreds.
    """
    from evolution.canonical import canonical_json
    from evolution.stats.canary_plan import expected_labels

    try:
        result = expected_labels(
            sigma, effect, alpha=alpha, n_opt=n_opt, harm_n_opt=harm_n_opt, paired=paired, n_max=n_max
        )
    except (InvalidInput, ValueError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(canonical_json(result.model_dump(mode="json")).decode() if as_json else _plan_text(result))


def register(app: typer.Typer) -> None:
    # The drift group is mounted by orchestration_commands, which adds its `scan`.
    app.add_typer(canary_app, name="canary")
