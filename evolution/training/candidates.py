"""Building a candidate: train on the latest verified snapshot through the compute port, sign, validate."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolution.contracts import TrainOut, ValidateOut
from evolution.data.snapshots import DatasetSnapshotService, SnapshotView
from evolution.errors import InsufficientData, TrainingFailed
from evolution.integrity.artifacts import ArtifactStore
from evolution.integrity.manifest import SignedManifest, build_manifest_from_dir, sign_manifest
from evolution.integrity.signing import KeyRing, Signer
from evolution.observability import metrics
from evolution.registry.quota import QuotaManager
from evolution.registry.tenant_settings import TenantSettings
from evolution.registry.tenants import TenantService
from evolution.registry.versions import ModelRegistryService
from evolution.security import Principal
from evolution.stats.drift import build_baseline
from evolution.stats.drift_models import DriftConfig, ErrorBaseline
from evolution.timeutil import utcnow
from evolution.training.compute import ComputeBackend, TrainingJob
from evolution.training.loader import BASELINE_FILE, ModelLoader
from evolution.training.slots import TrainingSlots
from evolution.training.trainer import TrainingConfig, holdout_mask
from evolution.training.validation import validate

log = logging.getLogger(__name__)

TARGET = "actual"
NON_FEATURE_COLUMNS = ("event_time", "actual", "request_id", "prediction_id")
MIN_TRAINING_ROWS = 200
TRAINER_NAME = "evolution.builtin.hist_gbr"


def training_config_for(rows: list[dict[str, Any]], settings: TenantSettings) -> TrainingConfig:
    """Features are every column of the events except identifiers; text-valued ones are categorical."""
    excluded = set(NON_FEATURE_COLUMNS) | set(settings.id_columns)
    features: list[str] = sorted({k for row in rows for k in row if k not in excluded})
    categorical = sorted({k for row in rows for k, v in row.items() if k in features and isinstance(v, str)})
    overrides = settings.training
    return TrainingConfig(
        features=features, categorical=categorical, target=TARGET, split_keys=["request_id"], **overrides
    )


def labelled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("actual") is not None]


def feature_columns(rows: list[dict[str, Any]], names: list[str]) -> dict[str, list[Any]]:
    return {name: [row.get(name) for row in rows] for name in names}


def charge_id_of(run_id: str, attempt: int) -> str:
    """The training_runs id of one attempt (at most 60 characters): the first attempt keeps the run id's tail."""
    if attempt <= 1:
        return run_id[-60:]
    suffix = f"#{attempt}"
    return run_id[-(60 - len(suffix)) :] + suffix


@dataclass(frozen=True)
class PreparedJob:
    """A training job ready to run, with what signing its outputs needs afterwards."""

    job: TrainingJob
    job_dir: Path
    snapshot: SnapshotView
    rows: list[dict[str, Any]]
    settings: TenantSettings


class CandidateBuilder:
    def __init__(
        self,
        *,
        registry: ModelRegistryService,
        tenants: TenantService,
        snapshots: DatasetSnapshotService,
        store: ArtifactStore,
        signer: Signer,
        keyring: KeyRing,
        loader: ModelLoader,
        compute: ComputeBackend,
        quota: QuotaManager,
        work_dir: Path,
        timeout_s: float,
        memory_limit_mb: int | None,
        gpus: int = 0,
        slots: TrainingSlots | None = None,
    ) -> None:
        self._registry = registry
        self._tenants = tenants
        self._snapshots = snapshots
        self._store = store
        self._signer = signer
        self._keyring = keyring
        self._loader = loader
        self._compute = compute
        self._quota = quota
        self._work_dir = work_dir
        self._timeout_s = timeout_s
        self._memory_limit_mb = memory_limit_mb
        self._gpus = gpus
        self._slots = slots or TrainingSlots(None)

    def training_snapshot(self, tenant_id: str) -> SnapshotView:
        snapshot = self._snapshots.latest(Principal.system(tenant_id), tenant_id)
        if snapshot is None:
            raise InsufficientData(f"tenant {tenant_id!r} has no sealed snapshot to train on")
        return snapshot

    def training_rows(self, snapshot: SnapshotView) -> list[dict[str, Any]]:
        rows = labelled(self._snapshots.load_rows(snapshot, self._keyring))
        if len(rows) < MIN_TRAINING_ROWS:
            raise InsufficientData(
                f"snapshot {snapshot.id} holds {len(rows)} labelled events; training needs {MIN_TRAINING_ROWS}"
            )
        return rows

    async def train(
        self,
        tenant_id: str,
        model_name: str,
        version_id: str,
        seed: int,
        run_id: str,
        heartbeat: Callable[[str], None] | None = None,
        attempt: int = 1,
    ) -> TrainOut:
        """Train one candidate. Every attempt (retries included) is checked against the quota first (QuotaExceeded:
        BLOCK_RETRAINING) and charged afterwards from its measured wall time, whatever became of it.

        It first waits for one of the worker's training slots (heartbeating): the wait is not charged, and the quota
        is checked once the slot is held, against what the runs before it consumed.
        """
        async with self._slots.hold(f"training {run_id}", heartbeat):
            system = Principal.system(tenant_id)
            # Reading the snapshot, writing the job and signing the model are synchronous and can take seconds on
            # a large tenant: they run off the event loop, which carries every activity's heartbeats.
            prepared = await asyncio.to_thread(self._prepare, tenant_id, model_name, seed, run_id)
            job = prepared.job
            charge_id = charge_id_of(run_id, attempt)
            started = utcnow()
            t0 = time.monotonic()
            try:
                result = await self._compute.run(job, heartbeat=heartbeat)
            except BaseException as error:
                # Cancelled from outside (the retraining's time limit ran out, or it was cancelled: the job is killed)
                # or the backend broke: the time the job held its resources is charged all the same.
                status = "timed_out" if isinstance(error, asyncio.CancelledError) else "error"
                duration = time.monotonic() - t0
                metrics.TRAINING_DURATION.labels(tenant_id, model_name, status).observe(duration)
                try:
                    self._quota.charge(
                        system, tenant_id, charge_id, version_id, started, duration, status, gpus=self._gpus
                    )
                except Exception:
                    log.exception("could not charge the interrupted training run %s", charge_id)
                raise
            duration = time.monotonic() - t0
            self._quota.charge(
                system, tenant_id, charge_id, version_id, started, duration, result.status, gpus=self._gpus
            )
            metrics.TRAINING_DURATION.labels(tenant_id, model_name, result.status).observe(duration)
            if result.status != "succeeded":
                raise TrainingFailed(
                    f"training job {result.status}: {result.error or result.log_tail[-500:]}"
                )
            signed = await asyncio.to_thread(
                self._sign_outputs, prepared, result.output_files, result.metrics
            )
            await asyncio.to_thread(
                self._record_quality, tenant_id, model_name, version_id, prepared.rows, result.metrics
            )
            log.info(
                "trained candidate %s on snapshot %s in %.1fs (holdout MAE %.4f)",
                version_id,
                prepared.snapshot.id,
                duration,
                result.metrics.get("holdout_mae", float("nan")),
                extra={"tenantId": tenant_id, "modelHash": signed.digest},
            )
            return TrainOut(
                snapshot_id=prepared.snapshot.id,
                model_hash=signed.digest,
                signed_manifest=signed.model_dump(mode="json", by_alias=True),
                metrics=result.metrics,
                duration_s=duration,
            )

    def _prepare(self, tenant_id: str, model_name: str, seed: int, run_id: str) -> PreparedJob:
        """Quota checked, the verified snapshot's rows written for the job, a clean output directory."""
        system = Principal.system(tenant_id)
        self._quota.check(system, tenant_id)
        snapshot = self.training_snapshot(tenant_id)
        rows = self.training_rows(snapshot)
        settings = self._tenants.tenant_settings(system, tenant_id)
        config = training_config_for(rows, settings)
        job_dir = self._work_dir / tenant_id / run_id.replace("/", "_")
        shutil.rmtree(job_dir, ignore_errors=True)  # a retried attempt starts clean
        output_dir = job_dir / "model"
        output_dir.mkdir(parents=True)
        dataset = job_dir / "dataset.jsonl"
        with dataset.open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row) + "\n")
        job = TrainingJob(
            job_id=run_id.replace("/", "_")[-60:],
            tenant=tenant_id,
            model_name=model_name,
            dataset_path=str(dataset),
            config=config,
            seed=seed,
            output_dir=str(output_dir),
            timeout_s=self._timeout_s,
            memory_limit_mb=self._memory_limit_mb,
            cpu_seconds=None,
        )
        return PreparedJob(job=job, job_dir=job_dir, snapshot=snapshot, rows=rows, settings=settings)

    def _sign_outputs(
        self, prepared: PreparedJob, output_files: Iterable[str], scores: dict[str, Any]
    ) -> SignedManifest:
        """Sign exactly the model's files plus the drift baseline (not the job's bookkeeping) and store the manifest."""
        job, tenant_id = prepared.job, prepared.job.tenant
        signed_dir = prepared.job_dir / "signed"
        signed_dir.mkdir()
        for name in output_files:
            shutil.copyfile(Path(job.output_dir) / name, signed_dir / name)
        drift_config = prepared.settings.drift_config_over(DriftConfig())
        baseline = build_baseline(feature_columns(prepared.rows, job.config.features), config=drift_config)
        errors = scores["holdout_abs_error"]
        baseline = baseline.model_copy(
            update={"errors": ErrorBaseline(n=errors["n"], mean=errors["mean"], var=errors["var"])}
        )
        (signed_dir / BASELINE_FILE).write_text(baseline.model_dump_json())
        manifest = build_manifest_from_dir(
            signed_dir,
            tenant=tenant_id,
            model_name=job.model_name,
            dataset_snapshot_id=prepared.snapshot.id,
            dataset_merkle_root=prepared.snapshot.merkle_root,
            training_config=job.config.model_dump(mode="json"),
            seed=job.seed,
            trainer=TRAINER_NAME,
            store=self._store,
        )
        signed = sign_manifest(manifest, self._signer)
        self._store.put_bytes(tenant_id, signed.model_dump_json(by_alias=True).encode())
        shutil.rmtree(prepared.job_dir, ignore_errors=True)
        return signed

    def _record_quality(
        self,
        tenant_id: str,
        model_name: str,
        version_id: str,
        rows: list[dict[str, Any]],
        scores: dict[str, Any],
    ) -> None:
        number = self._registry.get_version(Principal.system(tenant_id), version_id).number
        mae = float(scores["holdout_mae"])
        scale = sum(abs(float(r["actual"])) for r in rows) / len(rows)
        metrics.MODEL_MAE.labels(tenant_id, model_name, str(number)).set(mae)
        metrics.MODEL_ACCURACY.labels(tenant_id, model_name, str(number)).set(
            1.0 - mae / scale if scale else 0.0
        )

    def validate(
        self,
        tenant_id: str,
        model_name: str,
        version_id: str,
        signed_manifest: dict[str, Any],
        model_hash: str,
    ) -> ValidateOut:
        from evolution.lifecycle import ModelState

        system = Principal.system(tenant_id)
        candidate = self._loader.load_manifest(tenant_id, signed_manifest, model_hash, version_id, 0)
        champion_view = self._registry.current(system, tenant_id, model_name, ModelState.CHAMPION)
        champion = self._loader.load(champion_view) if champion_view else None
        snapshot_id = signed_manifest["manifest"]["dataset_snapshot_id"]
        rows = self.training_rows(self._snapshots.get(system, snapshot_id))
        mask = holdout_mask(rows, candidate.model.config)
        holdout = [row for row, held in zip(rows, mask, strict=True) if held]
        report = validate(candidate.model, champion.model if champion else None, holdout)
        return ValidateOut(
            passed=report.passed,
            reason=report.reason,
            candidate_mae=report.candidate_mae,
            champion_mae=report.champion_mae,
            n=report.n,
        )
