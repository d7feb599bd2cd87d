"""A candidate from a trainer that follows the training contract: staging its input, accepting its output.

Before: the training rows of the verified snapshot (the held-out ones stay here) are written into the job's input
directory, with schema.json and config.json (:func:`stage_contract_job`). After the trainer exits 0 and its output
directory keeps the contract (the backend judged it: :mod:`evolution.training.contract_output`), the model is
copied into the directory that will be signed, checked by the ONNX gate on a probe of held-out rows, given its card,
and scored on every held-out row through the served model, which gives the holdout MAE and the error summary of
the drift baseline (:func:`accept_contract_output`). Nothing the trainer wrote is read as a model before the gate.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evolution.errors import ModelFailed, ModelRefused, TrainingFailed
from evolution.registry.model_definitions import CommandTrainer, ImageTrainer, ModelDefinition
from evolution.training.columns import as_columns
from evolution.training.compute import ContractRun
from evolution.training.contract import (
    METRICS_FILE,
    MODEL_FILE,
    OUTCOME_COLUMN,
    SNAPSHOT_FILE,
    HoldoutSplit,
)
from evolution.training.contract_input import write_input_dir
from evolution.training.formats import ONNX_CARD, check_onnx_model, load_served_model, onnx_card

INPUT_DIR = "input"
OUTPUT_DIR = "output"
LOG_TAIL_LINES = 20
LOG_TAIL_CHARS = 2000


@dataclass(frozen=True)
class ContractStaging:
    """What a contract job was given, kept for judging what it returns."""

    definition: ModelDefinition
    split: HoldoutSplit
    training_rows: list[Mapping[str, Any]]
    held_out: list[Mapping[str, Any]]
    run: ContractRun
    input_dir: Path
    output_dir: Path


def stage_contract_job(
    job_dir: Path,
    definition: ModelDefinition,
    trainer: CommandTrainer | ImageTrainer,
    training_rows: Sequence[Mapping[str, Any]],
    held_out: Sequence[Mapping[str, Any]],
    split: HoldoutSplit,
    config: Mapping[str, Any],
) -> ContractStaging:
    """Write the input directory (the training rows: ``split`` held the others out) and an empty output directory
    under ``job_dir``."""
    if not training_rows or not held_out:
        raise TrainingFailed(
            f"the held-out split left {len(training_rows)} training and {len(held_out)} held-out rows; "
            "a contract trainer needs both"
        )
    input_dir, output_dir = job_dir / INPUT_DIR, job_dir / OUTPUT_DIR
    write_input_dir(input_dir, definition.features, definition.target, training_rows, config)
    output_dir.mkdir(parents=True)
    run = ContractRun(trainer=trainer, input_dir=str(input_dir), max_model_mb=definition.max_model_mb)
    return ContractStaging(
        definition=definition,
        split=split,
        training_rows=list(training_rows),
        held_out=list(held_out),
        run=run,
        input_dir=input_dir,
        output_dir=output_dir,
    )


def dataset_path(staging_dir: Path) -> Path:
    return staging_dir / INPUT_DIR / SNAPSHOT_FILE


def accept_contract_output(
    staging: ContractStaging,
    output_files: Mapping[str, str],
    trainer_metrics: Mapping[str, Any],
    signed_dir: Path,
) -> dict[str, Any]:
    """Copy the collected files into ``signed_dir``, pass the ONNX gate, write the card; the candidate's metrics.

    ``output_files`` are the digests the backend took when it judged the output: a file that differs now was
    changed after the trainer exited (a process it left behind), and is refused.
    """
    for name, digest in sorted(output_files.items()):
        copy_unlinked(staging.output_dir / name, signed_dir / name, digest)
    definition = staging.definition
    names = [f.name for f in definition.features]
    categorical = [f.name for f in definition.features if f.type == "categorical"]
    held_out = with_target(staging.held_out, definition.target)
    probe = as_columns(held_out, names, categorical)
    check = check_onnx_model(signed_dir, definition, probe)
    card = onnx_card(definition)
    (signed_dir / ONNX_CARD).write_bytes(card)
    served = load_served_model({MODEL_FILE: (signed_dir / MODEL_FILE).read_bytes(), ONNX_CARD: card})
    try:
        predictions = served.predict(held_out)
    except ModelFailed as error:
        raise ModelRefused(f"{MODEL_FILE} failed on the {len(held_out)} held-out rows: {error}") from None
    y = np.array([float(row[OUTCOME_COLUMN]) for row in staging.held_out], dtype=np.float64)
    finite = np.isfinite(predictions)
    if not finite.all():
        raise ModelRefused(
            f"{MODEL_FILE} gave {int((~finite).sum())} non-finite predictions (NaN or ±inf) on the "
            f"{len(held_out)} held-out rows"
        )
    errors = np.abs(predictions - y)
    metrics: dict[str, Any] = {
        "holdout_mae": float(errors.mean()),
        "holdout_rmse": float(np.sqrt(np.mean(errors**2))),
        "n_train": len(staging.training_rows),
        "n_holdout": len(held_out),
        "holdout_abs_error": {
            "n": len(errors),
            "mean": float(errors.mean()),
            "var": float(np.var(errors, ddof=1)) if len(errors) > 1 else 0.0,
        },
        "onnx": check.model_dump(mode="json"),
    }
    if METRICS_FILE in output_files:
        metrics["trainer"] = dict(trainer_metrics)
    return metrics


def with_target(rows: Sequence[Mapping[str, Any]], target: str) -> list[Mapping[str, Any]]:
    """Rows whose outcome is also under the target's name (the model's card names its target so)."""
    if target == OUTCOME_COLUMN:
        return list(rows)
    return [{**row, target: row.get(OUTCOME_COLUMN)} for row in rows]


def copy_unlinked(source: Path, destination: Path, expected_sha256: str) -> None:
    """Copy a regular file without following a link, and only if it still has the digest it was judged with."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise TrainingFailed(
            f"the trainer's {source.name} cannot be read any more: {error.strerror}"
        ) from None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as handle, destination.open("xb") as out:
        while block := handle.read(1 << 20):
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != expected_sha256:
        raise TrainingFailed(
            f"the trainer's {source.name} changed after the trainer exited (a process it left behind?): "
            "refused"
        )


def failure_message(status: str, error: str | None, log_tail: str) -> str:
    """Why a contract job failed, with the trainer's last output lines (kept in the audit log and the status)."""
    lines = [line.rstrip() for line in log_tail.splitlines() if line.strip()][-LOG_TAIL_LINES:]
    tail = "\n".join(lines)[-LOG_TAIL_CHARS:]
    message = f"training job {status}: {error or 'no reason given'}"
    return (
        f"{message}\nthe trainer's last output lines:\n{tail}"
        if tail
        else f"{message} (the trainer printed nothing)"
    )
