"""Building a candidate: train on the latest verified snapshot through the compute port, sign, validate.

A retraining reads the model definition in force when it starts (a change takes effect at the next one). The
built-in trainer runs as it always has (:mod:`evolution.training.job_runner` on the snapshot's rows); a command or
image trainer follows the training contract (:mod:`evolution.training.contract_training`: its input staged, its
output judged, checked and scored here). Either way the model's files and its drift baseline are signed in one
manifest that binds the snapshot, the configuration, the seed and the trainer's identity (its lineage).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolution.contracts import TrainOut, ValidateOut
from evolution.data.snapshots import DatasetSnapshotService, SnapshotView
from evolution.errors import InsufficientData, TrainingFailed
from evolution.integrity.artifacts import ArtifactStore
from evolution.integrity.manifest import SignedManifest, build_manifest_from_dir, sign_manifest
from evolution.integrity.signing import KeyRing, Signer
from evolution.integrity.trainer_identity import TrainerIdentity
from evolution.observability import metrics
from evolution.registry.model_definitions import (
    DEFAULT_DEFINITION,
    BuiltinTrainer,
    CommandTrainer,
    ModelDefinition,
    ModelDefinitions,
)
from evolution.registry.quota import QuotaManager
from evolution.registry.tenant_settings import TenantSettings
from evolution.registry.tenants import TenantService
from evolution.registry.versions import ModelRegistryService
from evolution.security import Principal
from evolution.stats.drift import build_baseline
from evolution.stats.drift_models import DriftConfig, ErrorBaseline
from evolution.timeutil import utcnow
from evolution.training.compute import TRAINER_LOG_FILE, ComputeBackend, TrainingJob, TrainingJobResult
from evolution.training.contract import HoldoutSplit, config_document, split_rows, training_config_record
from evolution.training.contract_training import (
    ContractStaging,
    accept_contract_output,
    dataset_path,
    failure_message,
    stage_contract_job,
)
from evolution.training.formats import holdout_split
from evolution.training.lineage import BUILTIN_TRAINER_NAME, resolved_argv, trainer_identity
from evolution.training.loader import BASELINE_FILE, ModelLoader
from evolution.training.slots import TrainingSlots
from evolution.training.trainer import TrainingConfig
from evolution.training.validation import validate

log = logging.getLogger(__name__)

TARGET = "actual"
NON_FEATURE_COLUMNS = ("event_time", "actual", "request_id", "prediction_id")
MIN_TRAINING_ROWS = 200
TRAINER_NAME = BUILTIN_TRAINER_NAME


def training_config_for(
    rows: list[dict[str, Any]], settings: TenantSettings, definition: ModelDefinition = DEFAULT_DEFINITION
) -> TrainingConfig:
    """The built-in trainer's config: the definition's features when it lists them, else every column of the
    events except identifiers, text-valued ones categorical."""
    if definition.features:
        features = [f.name for f in definition.features]
        categorical = sorted(f.name for f in definition.features if f.type == "categorical")
    else:
        excluded = set(NON_FEATURE_COLUMNS) | set(settings.id_columns)
        features = sorted({k for row in rows for k in row if k not in excluded})
        categorical = sorted(
            {k for row in rows for k, v in row.items() if k in features and isinstance(v, str)}
        )
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


def holdout_split_for(settings: TenantSettings) -> HoldoutSplit:
    """The held-out split of a contract trainer: the built-in trainer's (by request id, its fraction)."""
    fraction = settings.training.get("holdout_fraction", HoldoutSplit().fraction)
    return HoldoutSplit(fraction=fraction, split_keys=["request_id"])


@dataclass(frozen=True)
class PreparedJob:
    """A training job ready to run, with what signing its outputs needs afterwards."""

    job: TrainingJob
    job_dir: Path
    snapshot: SnapshotView
    rows: list[dict[str, Any]]
    settings: TenantSettings
    identity: TrainerIdentity
    training_config: dict[str, Any]
    """What the manifest binds: the built-in trainer's config, or config.json and the split."""
    contract: ContractStaging | None = None


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
        definitions: ModelDefinitions | None = None,
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
        self._definitions = definitions  # None: every model is trained by the built-in trainer

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
                self._discard_input(prepared)
                if prepared.contract is not None:
                    raise TrainingFailed(failure_message(result.status, result.error, result.log_tail))
                raise TrainingFailed(
                    f"training job {result.status}: {result.error or result.log_tail[-500:]}"
                )
            try:
                signed, scores = await asyncio.to_thread(self._sign_outputs, prepared, result)
            except BaseException:
                self._discard_input(prepared)
                raise
            await asyncio.to_thread(
                self._record_quality, tenant_id, model_name, version_id, prepared.rows, scores
            )
            log.info(
                "trained candidate %s on snapshot %s in %.1fs (holdout MAE %.4f)",
                version_id,
                prepared.snapshot.id,
                duration,
                scores.get("holdout_mae", float("nan")),
                extra={"tenantId": tenant_id, "modelHash": signed.digest},
            )
            return TrainOut(
                snapshot_id=prepared.snapshot.id,
                model_hash=signed.digest,
                signed_manifest=signed.model_dump(mode="json", by_alias=True),
                metrics=scores,
                duration_s=duration,
            )

    def definition_in_force(self, tenant_id: str, model_name: str) -> ModelDefinition:
        """The model's definition as it stands now (the built-in default when it was never defined)."""
        if self._definitions is None:
            return DEFAULT_DEFINITION
        return self._definitions.current(Principal.system(tenant_id), tenant_id, model_name).definition

    def _prepare(self, tenant_id: str, model_name: str, seed: int, run_id: str) -> PreparedJob:
        """Quota checked, the verified snapshot's rows written for the job, a clean output directory."""
        system = Principal.system(tenant_id)
        self._quota.check(system, tenant_id)
        definition = self.definition_in_force(tenant_id, model_name)
        # Hashed before anything runs: a code file that is missing fails the training here, named.
        identity = trainer_identity(definition.trainer)
        snapshot = self.training_snapshot(tenant_id)
        rows = self.training_rows(snapshot)
        settings = self._tenants.tenant_settings(system, tenant_id)
        job_dir = self._work_dir / tenant_id / run_id.replace("/", "_")
        shutil.rmtree(job_dir, ignore_errors=True)  # a retried attempt starts clean
        if not isinstance(definition.trainer, BuiltinTrainer):
            return self._prepare_contract(
                tenant_id, model_name, seed, run_id, definition, identity, snapshot, rows, settings, job_dir
            )
        config = training_config_for(rows, settings, definition)
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
        return PreparedJob(
            job=job,
            job_dir=job_dir,
            snapshot=snapshot,
            rows=rows,
            settings=settings,
            identity=identity,
            training_config=config.model_dump(mode="json"),
        )

    def _prepare_contract(
        self,
        tenant_id: str,
        model_name: str,
        seed: int,
        run_id: str,
        definition: ModelDefinition,
        identity: TrainerIdentity,
        snapshot: SnapshotView,
        rows: list[dict[str, Any]],
        settings: TenantSettings,
        job_dir: Path,
    ) -> PreparedJob:
        """A command or image trainer's job: its input staged from the training rows, its limits from the
        definition (the worker's where it sets none)."""
        trainer = definition.trainer
        assert not isinstance(trainer, BuiltinTrainer)
        split = holdout_split_for(settings)
        training_rows, held_out = split_rows(rows, split)
        config = config_document(
            definition,
            tenant=tenant_id,
            model_name=model_name,
            seed=seed,
            rows=len(training_rows),
            snapshot_id=snapshot.id,
            merkle_root=snapshot.merkle_root,
        )
        if isinstance(trainer, CommandTrainer):
            trainer = trainer.model_copy(update={"argv": resolved_argv(trainer)})
        staging = stage_contract_job(job_dir, definition, trainer, training_rows, held_out, split, config)
        job = TrainingJob(
            job_id=run_id.replace("/", "_")[-60:],
            tenant=tenant_id,
            model_name=model_name,
            dataset_path=str(dataset_path(job_dir)),
            # Not the built-in trainer's settings: the features, target and split the input was staged with.
            config=TrainingConfig(
                features=[f.name for f in definition.features],
                categorical=[f.name for f in definition.features if f.type == "categorical"],
                target=definition.target,
                split_keys=split.split_keys,
                holdout_fraction=split.fraction,
            ),
            seed=seed,
            output_dir=str(staging.output_dir),
            timeout_s=trainer.timeout_s or self._timeout_s,
            memory_limit_mb=trainer.memory_mb or self._memory_limit_mb,
            cpu_seconds=None,
            contract=staging.run,
        )
        return PreparedJob(
            job=job,
            job_dir=job_dir,
            snapshot=snapshot,
            rows=rows,
            settings=settings,
            identity=identity,
            training_config=training_config_record(config, split),
            contract=staging,
        )

    @staticmethod
    def _discard_input(prepared: PreparedJob) -> None:
        """A failed contract job keeps its log (trainer.log, in the job directory), not a copy of the tenant's rows
        nor what the trainer wrote."""
        if prepared.contract is None or not prepared.job_dir.is_dir():
            return
        for path in prepared.job_dir.iterdir():
            if path.name == TRAINER_LOG_FILE:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def _sign_outputs(
        self, prepared: PreparedJob, result: TrainingJobResult
    ) -> tuple[SignedManifest, dict[str, Any]]:
        """Sign exactly the model's files plus the drift baseline (not the job's bookkeeping) and store the manifest.

        Returns the signed manifest and the candidate's metrics (a contract trainer's are measured here, on the
        held-out rows, through the served model).
        """
        job, tenant_id = prepared.job, prepared.job.tenant
        signed_dir = prepared.job_dir / "signed"
        signed_dir.mkdir()
        if prepared.contract is not None:
            scores = accept_contract_output(
                prepared.contract, result.output_files, result.metrics, signed_dir
            )
        else:
            scores = result.metrics
            for name in result.output_files:
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
            training_config=prepared.training_config,
            seed=job.seed,
            trainer=TRAINER_NAME if prepared.contract is None else prepared.identity.describe()[:200],
            store=self._store,
            trainer_identity=prepared.identity,
        )
        signed = sign_manifest(manifest, self._signer)
        self._store.put_bytes(tenant_id, signed.model_dump_json(by_alias=True).encode())
        shutil.rmtree(prepared.job_dir, ignore_errors=True)
        return signed, scores

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
        # The rows held out when the candidate was trained, as its (just verified) manifest records them: the split
        # belongs to the run, whatever the model's format.
        split = holdout_split(signed_manifest["manifest"]["training_config"])
        holdout = [row for row, held in zip(rows, split.mask(rows), strict=True) if held]
        report = validate(candidate.model, champion.model if champion else None, holdout)
        return ValidateOut(
            passed=report.passed,
            reason=report.reason,
            candidate_mae=report.candidate_mae,
            champion_mae=report.champion_mae,
            n=report.n,
        )
