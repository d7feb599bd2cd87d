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
