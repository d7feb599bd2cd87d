"""The local backend running a command trainer under the training contract: what the process gets, and what is
collected from what it leaves. The trainers are real processes (small scripts of this interpreter)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from evolution.errors import TrainingFailed
from evolution.registry.model_definitions import CommandTrainer, ImageTrainer
from evolution.training.compute import TRAINER_LOG_FILE, ContractRun, TrainingJob
from evolution.training.local_backend import LocalSubprocessBackend
from evolution.training.trainer import TrainingConfig

REPORTS_ITSELF = """
import json, os, sys
report = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}
out = os.environ["EVOLUTION_OUTPUT_DIR"]
open(os.path.join(out, "model.onnx"), "wb").write(b"bytes the backend does not parse")
open(os.path.join(out, "notes.txt"), "w").write("not collected")
json.dump({"epochs": 3}, open(os.path.join(out, "metrics.json"), "w"))
print("REPORT " + json.dumps(report))
"""


def contract_job(tmp_path: Path, trainer: CommandTrainer | ImageTrainer, **overrides: object) -> TrainingJob:
    job_dir = tmp_path / "job"
    (job_dir / "input").mkdir(parents=True)
    (job_dir / "input" / "config.json").write_text("{}")
    fields: dict[str, object] = {
        "job_id": "job-1",
        "tenant": "acme",
        "model_name": "yield",
        "dataset_path": str(job_dir / "input" / "snapshot.parquet"),
        "config": TrainingConfig(features=["rain_mm"], target="actual"),
        "seed": 11,
        "output_dir": str(job_dir / "output"),
        "timeout_s": 60.0,
        "contract": ContractRun(trainer=trainer, input_dir=str(job_dir / "input"), max_model_mb=5),
    }
    return TrainingJob.model_validate(fields | overrides)


async def test_a_command_trainer_gets_the_contract_and_nothing_of_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVOLUTION_SIGNING_SECRET", "do-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    monkeypatch.setenv("PYTHONPATH", "/somewhere/with/our/code")
    script = tmp_path / "reports_itself.py"
    script.write_text(REPORTS_ITSELF)
    trainer = CommandTrainer(
        argv=[sys.executable, str(script), "--data={input}/snapshot.parquet", "{output}"]
    )
    job = contract_job(tmp_path, trainer, memory_limit_mb=1024)

    result = await LocalSubprocessBackend().run(job)

    assert result.status == "succeeded", (result.error, result.log_tail)
    job_dir, out = (tmp_path / "job").resolve(), (tmp_path / "job" / "output").resolve()
    report = json.loads(result.log_tail.split("REPORT ", 1)[1].splitlines()[0])
    assert report["argv"] == [f"--data={job_dir}/input/snapshot.parquet", str(out)]
    assert report["cwd"] == str(job_dir)
    env = report["env"]
    assert env["EVOLUTION_INPUT_DIR"] == str(job_dir / "input")
    assert env["EVOLUTION_OUTPUT_DIR"] == str(out)
    assert env["EVOLUTION_TRAINING_CONTRACT"] == "evolution-training/1"
    assert env["EVOLUTION_SEED"] == "11"
    assert env["OMP_NUM_THREADS"] == "1" and env["PYTHONHASHSEED"] == "0"
    assert env["HOME"] == env["TMPDIR"] == str(job_dir / "scratch")
    leaked = {"EVOLUTION_SIGNING_SECRET", "AWS_SECRET_ACCESS_KEY", "PYTHONPATH", "EVOLUTION_JOB_PARENT_PID"}
    assert leaked.isdisjoint(env), sorted(leaked & set(env))
    # Collected: model.onnx and metrics.json, hashed; notes.txt ignored; the log beside, not in, the output.
    assert set(result.output_files) == {"model.onnx", "metrics.json"}
    assert result.metrics == {"epochs": 3}
    assert (job_dir / TRAINER_LOG_FILE).read_text().startswith("REPORT ")


async def test_a_trainer_command_not_on_the_path_is_a_named_failure(tmp_path: Path) -> None:
    job = contract_job(tmp_path, CommandTrainer(argv=["no-such-trainer-binary", "{input}"]))
    with pytest.raises(TrainingFailed, match="'no-such-trainer-binary' is not on the worker's PATH"):
        await LocalSubprocessBackend().run(job)


async def test_the_local_backend_runs_no_image_trainer_and_says_where_it_runs(tmp_path: Path) -> None:
    image = ImageTrainer(image="registry.example.com/t@sha256:" + "0" * 64)
    with pytest.raises(TrainingFailed, match="needs the kubernetes backend"):
        await LocalSubprocessBackend().run(contract_job(tmp_path, image))


async def test_a_previous_attempts_output_is_never_collected(tmp_path: Path) -> None:
    job = contract_job(tmp_path, CommandTrainer(argv=[sys.executable, "-c", "pass"]))
    stale = Path(job.output_dir)
    stale.mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"from the attempt before")
    result = await LocalSubprocessBackend().run(job)
    assert result.status == "failed" and result.error is not None
    assert "wrote nothing into its output directory" in result.error
