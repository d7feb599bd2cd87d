"""`evolution drift compare` and `evolution canary plan`, driven through typer's CliRunner."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from evolution.cli.drift_output import compare_text
from evolution.cli.stats_commands import canary_app, drift_app
from evolution.stats.drift import DriftResult

runner = CliRunner()


def _root() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(drift_app, name="drift")
    app.add_typer(canary_app, name="canary")
    return app


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(_root(), list(args))
    text = result.output
    with contextlib.suppress(ValueError, AttributeError):  # older click mixes stderr into output
        text += result.stderr
    return result.exit_code, text


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    n, m = 4000, 800
    base = pa.table(
        {
            "rain": rng.normal(size=n),
            "soil": rng.choice(["clay", "loam", "sand"], n),
            "plots": rng.integers(0, 4, n),
            "err": np.abs(rng.normal(size=n)),
        }
    )
    rain = rng.normal(0.6, 1.0, m)
    rain[:80] = np.nan
    cur = pa.table(
        {
            "rain": rain,
            "soil": rng.choice(["clay", "loam", "silt"], m),
            "plots": rng.integers(0, 4, m),
            "err": np.abs(rng.normal(scale=1.3, size=m)),
        }
    )
    paths = {"base": tmp_path / "base.csv", "cur": tmp_path / "cur.parquet", "cur_csv": tmp_path / "cur.csv"}
    pacsv.write_csv(base, paths["base"])
    pq.write_table(cur, paths["cur"])
    pacsv.write_csv(cur, paths["cur_csv"])
    return paths


def test_compare_prints_a_per_feature_table_and_exits_0_despite_drift(files: dict[str, Path]) -> None:
    code, out = _run("drift", "compare", str(files["base"]), str(files["cur"]))
    assert code == 0, out
    header = out.splitlines()[0].split()
    assert header[:5] == ["feature", "kind", "psi", "kl", "p_adj"] and header[-1] == "status"
    assert "missing%" in out and "base->cur" in out
    rows = {line.split()[0]: line for line in out.splitlines()[1:5]}
    assert set(rows) == {"rain", "soil", "plots", "err"}
    assert rows["rain"].rstrip().endswith("alert") and "0.0% -> 10.0%" in rows["rain"]
    assert "level: alert" in out and "KL(current||baseline)" in out


def test_compare_json_is_canonical_and_parses_as_a_drift_result(files: dict[str, Path]) -> None:
    code, out = _run(
        "drift", "compare", str(files["base"]), str(files["cur_csv"]), "--json", "--alpha", "0.001"
    )
    assert code == 0, out
    line = out.strip()
    data = json.loads(line)
    assert line == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    result = DriftResult.model_validate(data)
    assert result.config.alpha == 0.001
    assert [f.feature for f in result.features] == ["rain", "soil", "plots", "err"]


def test_compare_selects_features_and_adds_the_mae_test(files: dict[str, Path]) -> None:
    code, out = _run(
        "drift",
        "compare",
        str(files["base"]),
        str(files["cur"]),
        "--features",
        "soil,plots",
        "--abs-error-column",
        "err",
        "--json",
    )
    assert code == 0, out
    result = DriftResult.model_validate_json(out.strip())
    assert [f.feature for f in result.features] == ["soil", "plots"]
    assert result.mae is not None and result.mae.status == "alert"


def test_identical_files_are_ok(files: dict[str, Path]) -> None:
    code, out = _run("drift", "compare", str(files["base"]), str(files["base"]), "--json")
    assert code == 0
    result = DriftResult.model_validate_json(out.strip())
    assert result.level == "ok" and all(f.psi == 0.0 for f in result.features)


def test_bad_input_exits_2_and_names_the_file_or_column(files: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    code, out = _run("drift", "compare", str(files["base"]), str(missing))
    assert code == 2 and str(missing) in out

    code, out = _run("drift", "compare", str(files["base"]), str(files["cur"]), "--features", "rain,yield")
    assert code == 2 and "'yield'" in out and str(files["base"]) in out

    lacking = tmp_path / "lacking.csv"
    pacsv.write_csv(pa.table({"rain": [1.0, 2.0]}), lacking)
    code, out = _run("drift", "compare", str(files["base"]), str(lacking))
    assert code == 2 and str(lacking) in out and "'soil'" in out

    texty = tmp_path / "texty.csv"
    pacsv.write_csv(
        pa.table({"rain": ["dry"] * 60, "soil": ["clay"] * 60, "plots": [1] * 60, "err": [0.1] * 60}), texty
    )
    code, out = _run("drift", "compare", str(files["base"]), str(texty))
    assert code == 2 and str(texty) in out and "'rain'" in out and "'dry'" in out

    weird = tmp_path / "data.xlsx"
    weird.write_text("x")
    code, out = _run("drift", "compare", str(files["base"]), str(weird))
    assert code == 2 and "unknown format" in out

    code, out = _run("drift", "compare", str(files["base"]), str(files["cur"]), "--alpha", "2")
    assert code == 2 and "--alpha" in out


def test_canary_plan_prints_labels_to_promote_and_to_roll_back() -> None:
    code, out = _run("canary", "plan", "--sigma", "0.6", "--effect", "0.03")
    assert code == 0, out
    assert "promote a candidate better by 0.03" in out and "roll back a candidate worse by 0.03" in out
    assert "median labelled requests to promote" in out and "Monte Carlo" in out


def test_canary_plan_json_is_deterministic_and_unpaired_needs_more_labels() -> None:
    code1, out1 = _run("canary", "plan", "--sigma", "0.6", "--effect", "0.03", "--json")
    code2, out2 = _run("canary", "plan", "--sigma", "0.6", "--effect", "0.03", "--json")
    assert code1 == code2 == 0 and out1 == out2
    paired = json.loads(out1)
    code, out = _run("canary", "plan", "--sigma", "0.6", "--effect", "0.03", "--unpaired", "--json")
    assert code == 0
    unpaired = json.loads(out)
    assert unpaired["labels_unit"] == "labelled requests per arm"
    assert unpaired["promote"]["expected_labels"] > paired["promote"]["expected_labels"]


def test_canary_plan_n_opt_moves_tau() -> None:
    _, out_a = _run("canary", "plan", "--sigma", "0.6", "--effect", "0.03", "--json", "--n-opt", "2000")
    _, out_b = _run("canary", "plan", "--sigma", "0.6", "--effect", "0.03", "--json")
    assert json.loads(out_a)["tau"] > json.loads(out_b)["tau"]


def test_canary_plan_rejects_bad_input_with_exit_2() -> None:
    code, out = _run("canary", "plan", "--sigma", "-1", "--effect", "0.03")
    assert code == 2 and "sigma" in out
    code, out = _run("canary", "plan", "--sigma", "0.6", "--effect", "0")
    assert code == 2 and "effect" in out


@pytest.fixture()
def broken(tmp_path: Path) -> dict[str, Path]:
    """A window with the field failures of statistics.md 1b: a rain sensor writing 9999 for 5 % of rows, a stuck
    soil-temperature sensor, a renamed soil category, and a free-text column whose values are all new."""
    rng = np.random.default_rng(1)
    n, m = 4000, 1000
    base = pa.table(
        {
            "rain_mm": rng.gamma(2.0, 12.0, n),
            "soil_temp": rng.normal(18.0, 3.0, n),
            "soil": rng.choice(["clay", "loam", "sand"], n),
            "notes": [f"visit {i}: {rng.integers(10**9)}" for i in range(n)],
        }
    )
    rain = rng.gamma(2.0, 12.0, m)
    rain[rng.choice(m, m // 20, replace=False)] = 9999.0
    cur = pa.table(
        {
            "rain_mm": rain,
            "soil_temp": np.full(m, 21.5),
            "soil": rng.choice(["clay", "loam", "sandy soil"], m),
            "notes": [f"call {i}: {rng.integers(10**9)}" for i in range(m)],
        }
    )
    paths = {"base": tmp_path / "base.csv", "cur": tmp_path / "cur.parquet", "cur_csv": tmp_path / "cur.csv"}
    pacsv.write_csv(base, paths["base"])
    pq.write_table(cur, paths["cur"])
    pacsv.write_csv(cur, paths["cur_csv"])
    return paths


def _section(out: str, first: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    return lines[start:]


@pytest.mark.parametrize("window", ["cur", "cur_csv"])
def test_compare_prints_the_data_quality_checks_beside_psi(broken: dict[str, Path], window: str) -> None:
    code, out = _run("drift", "compare", str(broken["base"]), str(broken[window]))
    assert code == 0, out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:5]}
    # PSI reads ok for rain_mm (the 9999s fall into the open top bin) ...
    assert rows["rain_mm"][-1] == "ok" and float(rows["rain_mm"][2]) < 0.1
    # ... and the free-text column says it is not measured, and why, instead of a PSI.
    assert rows["notes"][2:4] == ["not", "measured"] and rows["notes"][-1] == "not_measured"
    assert "notes: not measured for drift: high_cardinality: free text or identifiers" in out

    quality = _section(out, "data quality:")
    assert quality[0].startswith("data quality: alert") and "3 alert" in quality[0]
    assert quality[1].split() == ["feature", "check", "status", "k/m", "p_adj", "what"]
    checks = {
        (line.split()[0], line.split()[1]): line for line in quality[2:] if not line.startswith("note:")
    }
    out_of_range = checks[("rain_mm", "out_of_range")]
    assert out_of_range.split()[2:4] == ["alert", "50/1000"]
    assert "5.0 % of rain_mm values are above the usual maximum of" in out_of_range
    assert float(out_of_range.split()[4]) < 1e-10
    stuck = checks[("soil_temp", "stuck")]
    assert stuck.split()[2:4] == ["alert", "1000/1000"] and "100.0 % of soil_temp values" in stuck
    unseen = checks[("soil", "unseen_categories")]
    assert unseen.split()[2] == "alert" and "'sandy soil'" in unseen
    free_text = checks[("notes", "unseen_categories")]
    assert free_text.split()[2:5] == ["not_measured", "-", "-"] and "free text or an identifier" in free_text
    # Checks that are plainly ok are counted, not listed.
    assert ("rain_mm", "missing_rate") not in checks and "8 ok" in quality[0]
    assert quality[-1] == "note: a data-quality alert does not start a retraining by itself " + (
        "(retraining on broken data teaches the model the breakage)"
    )


def test_compare_json_holds_the_checks_as_structured_data(broken: dict[str, Path]) -> None:
    code, out = _run("drift", "compare", str(broken["base"]), str(broken["cur"]), "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["quality"]["level"] == "alert"
    result = DriftResult.model_validate(data)
    assert result.quality is not None
    fired = {(c.feature, c.check) for c in result.quality.alerts}
    assert fired == {("rain_mm", "out_of_range"), ("soil_temp", "stuck"), ("soil", "unseen_categories")}
    by_key = {(c.feature, c.check): c for c in result.quality.checks}
    rain = by_key[("rain_mm", "out_of_range")]
    assert (rain.k, rain.m, rain.direction) == (50, 1000, "above") and rain.bounds is not None
    assert rain.p_adjusted is not None and rain.p_adjusted < 1e-10
    assert by_key[("soil", "unseen_categories")].examples[0] == "sandy soil"
    notes = by_key[("notes", "unseen_categories")]
    assert notes.status == "not_measured" and notes.reason == "high_cardinality"
    drift = {f.feature: f for f in result.features}
    assert drift["rain_mm"].status == "ok"
    assert drift["notes"].status == "not_measured" and drift["notes"].psi is None and drift["notes"].reason


def test_compare_of_a_clean_window_says_every_check_is_ok(files: dict[str, Path]) -> None:
    code, out = _run("drift", "compare", str(files["base"]), str(files["base"]))
    assert code == 0, out
    quality = _section(out, "data quality:")
    assert quality[0].startswith("data quality: ok") and quality[1] == "every check ok"
    assert "does not start a retraining" not in out


def test_a_result_made_before_the_checks_says_they_were_not_run(files: dict[str, Path]) -> None:
    code, out = _run("drift", "compare", str(files["base"]), str(files["cur"]), "--json")
    assert code == 0, out
    older = DriftResult.model_validate_json(out.strip()).model_copy(update={"quality": None})
    text = compare_text(older)
    assert (
        text.splitlines()[-1] == "data quality: checks not run (a result made before the data-quality checks)"
    )
    assert "level: alert" in text
