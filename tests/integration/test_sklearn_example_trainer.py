"""The example trainer of examples/sklearn_pipeline (what `evolution demo --byo` defines as the tenant's trainer):
one file with two names, standalone, and run exactly as the demo runs it (the local backend, the definition's
command) on an input directory the system's own writer made, its output passes the ONNX gate the system applies
before signing, and the same input and seed give the same bytes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from evolution.cli.main import app
from evolution.demo import byo
from evolution.demo.synthetic import TARGET, generate_rows
from evolution.registry.model_definitions import ModelDefinition
from evolution.timeutil import utcnow
from evolution.training.columns import as_columns
from evolution.training.compute import ContractRun, TrainingJob, TrainingJobResult
from evolution.training.contract import OUTCOME_COLUMN, config_document
from evolution.training.contract_input import write_input_dir
from evolution.training.formats import check_onnx_model, load_served_model, onnx_card
from evolution.training.local_backend import LocalSubprocessBackend
from evolution.training.trainer import TrainingConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sklearn_pipeline"
ALLOWED_IMPORTS = {"numpy", "pandas", "pyarrow", "sklearn", "skl2onnx"}  # pandas: through pyarrow's to_pandas


def test_the_example_and_the_packaged_trainer_are_one_file() -> None:
    assert byo.TRAINER_FILE == ROOT / "evolution" / "demo" / "sklearn_trainer.py"
    assert (EXAMPLE / "train.py").read_bytes() == byo.TRAINER_FILE.read_bytes(), (
        "examples/sklearn_pipeline/train.py must be evolution/demo/sklearn_trainer.py (a link to it)"
    )
    assert (EXAMPLE / "train.py").resolve() == byo.TRAINER_FILE


def test_the_example_imports_nothing_of_the_project() -> None:
    tree = ast.parse(byo.TRAINER_FILE.read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
        if not (isinstance(node, ast.ImportFrom) and node.level)
    }
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party <= ALLOWED_IMPORTS and {"sklearn", "skl2onnx"} <= third_party, third_party
    requirements = (EXAMPLE / "requirements.txt").read_text().split()
    named = {line.split(">=")[0] for line in requirements if not line.startswith("#") and ">=" in line}
    assert named == {"numpy", "pandas", "pyarrow", "scikit-learn", "skl2onnx"}


def _input_dir(tmp_path: Path, definition: ModelDefinition, rows: list[dict[str, object]]) -> Path:
    """The contract's input, written by the system's own writer (as a retraining writes it)."""
    input_dir = tmp_path / "job" / "input"
    config = config_document(
        definition,
        tenant="acme-agro",
        model_name="yield",
        seed=42,
        rows=len(rows),
        snapshot_id="ds-test",
        merkle_root="0" * 64,
    )
    write_input_dir(input_dir, definition.features, definition.target, rows, config)
    return input_dir


def _rows(n: int, seed: int) -> list[dict[str, object]]:
    rows = generate_rows(n, seed=seed, start=utcnow() - timedelta(days=30), period_s=600)
    return [{**r, OUTCOME_COLUMN: r[TARGET]} for r in rows]


async def _train(tmp_path: Path, definition: ModelDefinition, input_dir: Path, run: str) -> TrainingJobResult:
    trainer = definition.trainer
    assert trainer.kind == "command"
    job = TrainingJob(
        job_id=f"example-{run}",
        tenant="acme-agro",
        model_name="yield",
        dataset_path=str(input_dir / "snapshot.parquet"),
        config=TrainingConfig(features=[f.name for f in definition.features], target=definition.target),
        seed=42,
        output_dir=str(tmp_path / "job" / f"output-{run}"),
        timeout_s=180,
        contract=ContractRun(trainer=trainer, input_dir=str(input_dir), max_model_mb=definition.max_model_mb),
    )
    return await LocalSubprocessBackend().run(job)


@pytest.mark.slow
async def test_the_example_trained_as_the_demo_runs_it_passes_the_onnx_gate_and_is_reproducible(
    tmp_path: Path,
) -> None:
    definition = (
        byo.example_definition()
    )  # the demo's definition: this Python, the packaged file, {input} {output}
    training, held_out = _rows(1200, seed=5), _rows(300, seed=6)
    held_out[0]["rain_mm"], held_out[1]["crop"] = None, None  # missing values at prediction time
    input_dir = _input_dir(tmp_path, definition, training)

    first = await _train(tmp_path, definition, input_dir, "1")
    assert first.status == "succeeded", (first.error, first.log_tail)
    assert set(first.output_files) == {"model.onnx", "metrics.json"}
    assert "train.py: fitted GradientBoostingRegressor" in first.log_tail, first.log_tail
    metrics = first.metrics
    assert metrics["rows"] == len(training) and 0 < metrics["train_mae"] < 1.0, metrics
    assert metrics["hyperparameters"] == {**byo.HYPERPARAMETERS, "random_state": 42}

    # The gate the system applies before signing: inputs are exactly the features, typed; the probe predicts.
    output = tmp_path / "job" / "output-1"
    names = [f.name for f in definition.features]
    categorical = [f.name for f in definition.features if f.type == "categorical"]
    check = check_onnx_model(output, definition, as_columns(held_out, names, categorical))
    assert check.inputs == {
        f.name: "tensor(string)" if f.type == "categorical" else "tensor(float)" for f in definition.features
    }
    served = load_served_model(
        {"model.onnx": (output / "model.onnx").read_bytes(), "onnx_card.json": onnx_card(definition)}
    )
    predictions = served.predict(held_out)
    actual = np.array([r[TARGET] for r in held_out], dtype=np.float64)
    mae = float(np.mean(np.abs(predictions - actual)))
    assert np.isfinite(predictions).all()
    assert mae < 0.5 * float(np.mean(np.abs(actual - actual.mean()))), mae  # far better than the mean

    # The same input and seed: the same bytes (what `evolution verify --reproduce` relies on).
    again = await _train(tmp_path, definition, input_dir, "2")
    assert again.status == "succeeded", (again.error, again.log_tail)
    assert again.output_files == first.output_files


def test_an_input_that_breaks_the_contract_exits_2_with_a_message(tmp_path: Path) -> None:
    definition = byo.example_definition().model_copy(update={"hyperparameters": {"max_dept": 3}})
    input_dir = _input_dir(tmp_path, definition, _rows(50, seed=1))
    trainer = [sys.executable, str(EXAMPLE / "train.py")]
    typo = subprocess.run(
        [*trainer, str(input_dir), str(tmp_path / "out")], capture_output=True, text=True, timeout=120
    )
    assert typo.returncode == 2, typo.stderr
    assert "unknown hyperparameter max_dept" in typo.stderr and "max_depth" in typo.stderr
    nowhere = subprocess.run(
        [*trainer, str(tmp_path / "nowhere"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nowhere.returncode == 2 and "config.json is missing" in nowhere.stderr, nowhere.stderr
    wrong = json.loads((input_dir / "config.json").read_text()) | {"contract": "evolution-training/9"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps(wrong))
    other = subprocess.run(
        [*trainer, str(tmp_path / "other"), str(tmp_path / "out")], capture_output=True, text=True, timeout=60
    )
    assert other.returncode == 2 and "evolution-training/9" in other.stderr, other.stderr
    assert not (tmp_path / "out").exists()


def test_demo_byo_says_what_to_install_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = byo.importlib.util.find_spec
    monkeypatch.setattr(
        byo.importlib.util, "find_spec", lambda name, *a: None if name == "skl2onnx" else real(name, *a)
    )
    monkeypatch.setenv("EVOLUTION_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["demo", "--byo", "--fast"])
    assert result.exit_code == 1, result.output
    assert "lacks skl2onnx" in result.output and "controlled-evolution[examples]" in result.output
    assert not (tmp_path / "home" / "logs").exists()  # no service was started
