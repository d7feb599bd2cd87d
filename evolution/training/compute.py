"""The compute port (where training runs): one job in, one result out, and what every backend shares.

A job runs one of two kinds of trainer:

* the built-in one (``contract`` is None): the caller writes the snapshot's rows to ``dataset_path``
  (:func:`write_dataset`); a backend runs :mod:`evolution.training.job_runner` somewhere with limits and returns
  the digests of the files it left in ``output_dir``, judged from the runner's result.json (:func:`verified_result`);
* a trainer that follows the training contract (``contract`` set: a command, or an image pinned by digest): the
  caller writes its input directory (:mod:`evolution.training.contract_input`); a backend runs the trainer with the
  contract's environment, and once it exits 0 judges its output directory (:func:`contract_result`). The job
  directory, the trainer's working directory, is the parent of ``output_dir``.

Both backends, the embedded local subprocess (:mod:`evolution.training.local_backend`) and the Kubernetes Job
(:mod:`evolution.training.kubernetes_backend`), judge results with the helpers here, so a model is accepted by the
same rule wherever it was trained.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, Literal, Protocol, cast

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from evolution.errors import InvalidInput
from evolution.registry.model_definitions import CommandTrainer, ImageTrainer
from evolution.training.contract import CONTRACT
from evolution.training.contract_output import OutputRefused, collect_output
from evolution.training.trainer import MODEL_FILES, TrainingConfig

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
TRAINER_LOG_FILE = "trainer.log"  # a contract trainer's output, kept in the job directory (not in its output)
RUNNER_MODULE = "evolution.training.job_runner"

# Every backend puts these in the runner's environment: the fitted bytes must not depend on the core count.
THREAD_CAPS: dict[str, str] = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "BLIS_NUM_THREADS": "1",
}

Heartbeat = Callable[[str], None]


class ContractRun(BaseModel):
    """A trainer that follows the training contract, run instead of the built-in job runner."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trainer: CommandTrainer | ImageTrainer = Field(discriminator="kind")
    input_dir: str = Field(
        description="snapshot.parquet, schema.json and config.json, written by the caller."
    )
    max_model_mb: int = Field(ge=1, description="The output directory may hold at most this much.")
    contract: str = CONTRACT


class TrainingJob(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str = Field(min_length=1, max_length=200)
    tenant: str = Field(min_length=1)
    model_name: str = Field(min_length=1)
    dataset_path: str = Field(
        description="JSON Lines (optionally .gz) or Parquet file of rows, written by the caller."
    )
    config: TrainingConfig
    seed: int
    output_dir: str
    timeout_s: float = Field(gt=0)
    memory_limit_mb: int | None = Field(default=None, ge=16)
    cpu_seconds: int | None = Field(default=None, ge=1)
    contract: ContractRun | None = Field(
        default=None,
        description="None: the built-in trainer (job_runner); else the contract trainer to run. ``config`` then "
        "names the features, target and held-out split the input was staged with.",
    )

    @model_serializer(mode="wrap")
    def _builtin_without_contract(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A built-in job is written as before contracts existed: a runner of an older image reads its job.json
        (it forbids unknown keys), and a Job created by an older worker keeps its digest and is adopted."""
        data: dict[str, Any] = handler(self)
        if self.contract is None:
            data.pop("contract", None)
        return data


class TrainingJobResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    status: Literal["succeeded", "failed", "timed_out"]
    output_files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256 hex")
    metrics: dict[str, Any] = Field(default_factory=dict)
    duration_s: float
    log_tail: str = ""
    exit_code: int | None = None
    error: str | None = Field(default=None, description="Why the job did not succeed, in words.")


class ComputeBackend(Protocol):
    async def run(self, job: TrainingJob, heartbeat: Heartbeat | None = None) -> TrainingJobResult:
        """Run ``job`` to completion, timeout or cancellation; a cancelled caller's job is killed."""
        ...

    async def cancel(self, job_id: str) -> None:
        """Stop a running job; its ``run`` then returns status ``failed`` with error ``cancelled``."""
        ...


def write_job_file(job: TrainingJob) -> Path:
    """Clear a previous attempt's outputs from ``job.output_dir`` and write the job file the runner reads.

    Shared by every backend whose runner sees the caller's file system (the local child; a Kubernetes pod
    through the shared work volume). ``job``'s paths must already be absolute.
    """
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (*MODEL_FILES, RESULT_FILE):  # never report a previous attempt's files
        (out / stale).unlink(missing_ok=True)
    job_path = out / JOB_FILE
    job_path.write_text(job.model_dump_json(indent=2))
    return job_path


def verified_result(
    job: TrainingJob,
    *,
    exit_code: int | None,
    exit_failure: str | None,
    duration_s: float,
    log_tail: str,
) -> TrainingJobResult:
    """The result of a job that ran to its end: what its result.json says, with every output re-hashed.

    ``exit_failure`` is None when the runner exited 0, else the backend's words for how it ended. Success
    needs both a clean exit and a result.json naming exactly the model files with matching digests.
    """
    base: dict[str, Any] = {
        "job_id": job.job_id,
        "duration_s": duration_s,
        "log_tail": log_tail,
        "exit_code": exit_code,
    }
    reported = _read_result(Path(job.output_dir) / RESULT_FILE, job.job_id)
    if exit_failure is not None:
        error = reported.get("error") or exit_failure + _last_line(log_tail)
        return TrainingJobResult(status="failed", error=str(error), **base)
    if reported.get("status") != "succeeded":
        error = reported.get("error") or f"the job exited 0 but {RESULT_FILE} is missing or not a success"
        return TrainingJobResult(status="failed", error=str(error), **base)
    files, problem = _verify_outputs(Path(job.output_dir), reported.get("output_files"))
    if problem is not None:
        return TrainingJobResult(status="failed", error=problem, **base)
    return TrainingJobResult(
        status="succeeded", output_files=files, metrics=dict(reported.get("metrics") or {}), **base
    )


def contract_result(
    job: TrainingJob,
    *,
    exit_code: int | None,
    exit_failure: str | None,
    duration_s: float,
    log_tail: str,
) -> TrainingJobResult:
    """The result of a contract trainer that ran to its end: exit 0 and an output directory that keeps the contract.

    ``exit_failure`` is None when the trainer exited 0, else the backend's words for how it ended. The output files
    are judged by :func:`~evolution.training.contract_output.collect_output`; files it ignores are named in the log.
    """
    assert job.contract is not None
    base: dict[str, Any] = {
        "job_id": job.job_id,
        "duration_s": duration_s,
        "log_tail": log_tail,
        "exit_code": exit_code,
    }
    if exit_failure is not None:
        return TrainingJobResult(
            status="failed", error=f"the trainer {exit_failure.removeprefix('the job ')}", **base
        )
    try:
        collected = collect_output(Path(job.output_dir), job.contract.max_model_mb)
    except OutputRefused as refused:
        return TrainingJobResult(status="failed", error=str(refused), **base)
    if collected.ignored:
        log.info(
            "job %s: the trainer also wrote %s; not collected (only %s are)",
            job.job_id,
            ", ".join(collected.ignored[:20]) + (" …" if len(collected.ignored) > 20 else ""),
            " and ".join(sorted(collected.files)),
            extra={"tenantId": job.tenant},
        )
    return TrainingJobResult(
        status="succeeded", output_files=collected.files, metrics=collected.metrics, **base
    )


def write_dataset(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows as JSON Lines (one canonical object per line; ``.gz`` suffix compresses) for a job."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _open_binary(target, "wb") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True, separators=(",", ":"), default=str).encode() + b"\n")
    return target


def load_dataset(path: str | Path) -> list[dict[str, Any]]:
    """Rows from JSON Lines (``.jsonl``, ``.ndjson``, ``.json``, optionally ``.gz``) or a Parquet file."""
    source = Path(path)
    if not source.is_file():
        raise InvalidInput(f"dataset file {str(source)!r} does not exist")
    suffixes = [s.lower() for s in source.suffixes]
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        import pyarrow.parquet as pq  # imported here: only Parquet datasets need it

        return [dict(row) for row in pq.read_table(source).to_pylist()]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    kind = suffixes[-2] if compressed and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if kind not in (".jsonl", ".ndjson", ".json"):
        raise InvalidInput(f"dataset file {source.name!r}: expected .jsonl, .ndjson, .json(.gz) or .parquet")
    rows: list[dict[str, Any]] = []
    with _open_binary(source, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InvalidInput(f"dataset {source.name!r} line {number} is not JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise InvalidInput(f"dataset {source.name!r} line {number} is not a JSON object")
            rows.append(row)
    return rows


def _open_binary(path: Path, mode: Literal["rb", "wb"]) -> IO[bytes]:
    if path.suffix.lower() == ".gz":
        return cast(IO[bytes], gzip.open(path, mode))
    return path.open(mode)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f": {lines[-1][:300]}" if lines else ""


def _read_result(path: Path, job_id: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("job_id") != job_id:
        return {}
    return data


def _verify_outputs(out: Path, claimed: Any) -> tuple[dict[str, str], str | None]:
    """Re-hash the files the child names; they must be exactly the model files and match its digests."""
    if not isinstance(claimed, Mapping) or set(claimed) != set(MODEL_FILES):
        return {}, f"{RESULT_FILE} must list exactly {sorted(MODEL_FILES)}, got {claimed!r}"
    files: dict[str, str] = {}
    for name in sorted(claimed):
        path = out / name
        if not path.is_file():
            return {}, f"output file {name} is missing from {out}"
        files[name] = sha256_file(path)
        if files[name] != claimed[name]:
            return {}, f"output file {name} has sha256 {files[name]}, the job reported {claimed[name]}"
    return files, None
