"""Child entry point of the local compute backend: ``python -m evolution.training.job_runner JOB_JSON``.

Reads the job, loads its dataset, trains, saves model.json and model.pkl into the job's output_dir and writes
result.json there last (so a result file means the model files are complete). Progress and any traceback go to
stderr, which the backend keeps as the log tail. Exit code 0 on success, 1 on a failed job, 2 on a bad call.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evolution.training.parent_watch import die_with_parent

if TYPE_CHECKING:
    from evolution.training.compute import TrainingJob

log = logging.getLogger("evolution.training.job_runner")


def run_job(job: TrainingJob) -> dict[str, Any]:
    """Train ``job`` and return what result.json should say; exceptions propagate to :func:`main`."""
    from evolution.training.compute import load_dataset, sha256_file
    from evolution.training.trainer import train

    started = time.monotonic()
    rows = load_dataset(job.dataset_path)
    log.info("job %s: loaded %d rows from %s", job.job_id, len(rows), job.dataset_path)
    model = train(rows, job.config, job.seed)
    paths = model.save(job.output_dir)
    metrics = model.metrics.model_dump(mode="json")
    log.info(
        "job %s: trained in %.2f s, holdout MAE %.4f on %d rows (%d training rows)",
        job.job_id,
        time.monotonic() - started,
        metrics["holdout_mae"],
        metrics["n_holdout"],
        metrics["n_train"],
    )
    return {
        "job_id": job.job_id,
        "status": "succeeded",
        "output_files": {path.name: sha256_file(path) for path in paths},
        "metrics": metrics,
    }


def main(argv: Sequence[str] | None = None) -> int:
    die_with_parent()  # a job must not outlive the worker that started it: before the heavy imports below
    from evolution.training.compute import RESULT_FILE, TrainingJob

    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    if len(args) != 1:
        log.error("usage: python -m evolution.training.job_runner JOB_JSON")
        return 2
    try:
        job = TrainingJob.model_validate_json(Path(args[0]).read_bytes())
    except Exception:
        log.error("cannot read the job file %s:\n%s", args[0], traceback.format_exc())
        return 2
    try:
        result = run_job(job)
        code = 0
    except Exception as exc:
        log.error("job %s failed:\n%s", job.job_id, traceback.format_exc())
        result = {"job_id": job.job_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        code = 1
    _write_atomically(Path(job.output_dir) / RESULT_FILE, json.dumps(result, sort_keys=True, indent=2))
    return code


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
