"""The composition root: builds the adapters and services a process needs from one Settings object.

Each process (worker, serving, dashboard, CLI) and the tests call :func:`build_services` once and take what they
need from :class:`Services`, so every one of them runs the same graph built the same way.

Each service's module is imported when the service is first built, not with this module: a CLI command that reads
the registry does not load the training stack (scikit-learn), the Kubernetes client or boto3 it never uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from evolution.canary.service import CanaryService
    from evolution.canary.watch import PostPromotionWatches
    from evolution.canary.watch_resume import StrandedWatches
    from evolution.data.events import EventIngestor
    from evolution.data.outcomes import OutcomeJoiner
    from evolution.data.quality_holds import SnapshotHolds
    from evolution.data.snapshots import DatasetSnapshotService
    from evolution.drift.baselines import BaselineService
    from evolution.drift.quality_backfill import BaselineQualityService
    from evolution.drift.reports import DriftReportService
    from evolution.drift.scanner import DriftScanner
    from evolution.governance.approval_tickets import ApprovalTickets
    from evolution.governance.economics_queries import EconomicsService
    from evolution.governance.garbage_collection import RetentionService
    from evolution.governance.tokens import TokenService
    from evolution.governance.users import UserService
    from evolution.integrity.artifacts import ArtifactStore
    from evolution.integrity.signing import KeyRing, Signer
    from evolution.notifications.fanout import FanOutNotifier
    from evolution.notifications.lineage import LineageDelivery
    from evolution.notifications.port import Notifier
    from evolution.platform.settings import Settings
    from evolution.registry.audit_checkpoints import AuditCheckpointer
    from evolution.registry.circuit_breaker import CircuitBreaker
    from evolution.registry.lineage_outbox import LineageOutbox
    from evolution.registry.model_definitions import ModelDefinitions
    from evolution.registry.quota import QuotaManager
    from evolution.registry.stranded import CandidateReconciler
    from evolution.registry.tenants import TenantService
    from evolution.registry.versions import ModelRegistryService
    from evolution.serving.auth import TokenAuthenticator
    from evolution.serving.predictor import Predictor
    from evolution.training.candidates import CandidateBuilder
    from evolution.training.compute import ComputeBackend
    from evolution.training.loader import ModelLoader


@dataclass
class Services:
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    store: ArtifactStore
    signer: Signer

    @cached_property
    def keyring(self) -> KeyRing:
        """The signer's key and every retired one (verify-only), so what an old key signed keeps verifying."""
        from evolution.integrity.key_rotation import trusted_keyring

        return trusted_keyring(self.signer, self.settings.keys_dir)

    @cached_property
    def lineage_delivery(self) -> LineageDelivery:
        """Delivers the outbox's OpenLineage events to the configured transport (file or HTTP)."""
        from evolution.notifications.lineage import LineageDelivery

        return LineageDelivery(self.factory, self.settings.lineage, self.settings.lineage_file)

    @cached_property
    def lineage(self) -> LineageOutbox:
        """Records OpenLineage events in the outbox; each recording is followed by a delivery attempt."""
        from evolution.registry.lineage_outbox import LineageOutbox

        return LineageOutbox(
            self.settings.lineage.namespace, on_recorded=lambda tenant: self.lineage_delivery.nudge(tenant)
        )

    @cached_property
    def registry(self) -> ModelRegistryService:
        from evolution.registry.versions import ModelRegistryService

        return ModelRegistryService(self.factory, lineage=self.lineage)

    @cached_property
    def tenants(self) -> TenantService:
        from evolution.registry.tenants import TenantService

        return TenantService(self.factory)

    @cached_property
    def model_definitions(self) -> ModelDefinitions:
        from evolution.registry.model_definitions import ModelDefinitions

        return ModelDefinitions(self.factory)

    @cached_property
    def reconciler(self) -> CandidateReconciler:
        from evolution.registry.stranded import CandidateReconciler

        return CandidateReconciler(self.registry)

    @cached_property
    def snapshots(self) -> DatasetSnapshotService:
        from evolution.data.snapshots import DatasetSnapshotService

        return DatasetSnapshotService(self.factory, self.store, self.signer, lineage=self.lineage)

    @cached_property
    def events(self) -> EventIngestor:
        from evolution.data.events import EventIngestor

        days = self.settings.event_max_age_days
        return EventIngestor(self.factory, max_event_age=timedelta(days=days) if days is not None else None)

    @cached_property
    def audit_checkpoints(self) -> AuditCheckpointer:
        from evolution.registry.audit_checkpoints import AuditCheckpointer

        return AuditCheckpointer(
            self.factory, self.store, self.signer, self.keyring, every=self.settings.audit_checkpoint_every
        )

    @cached_property
    def drift_reports(self) -> DriftReportService:
        from evolution.drift.reports import DriftReportService

        return DriftReportService(self.factory, self.store, self.signer)

    @cached_property
    def notifier(self) -> Notifier:
        """The outbox alone (embedded default), or fanned out to e-mail and a webhook when configured."""
        from evolution.notifications.fanout import FanOutNotifier
        from evolution.notifications.outbox import OutboxNotifier

        config = self.settings.notifications
        if config.smtp is None and config.webhook is None:
            return OutboxNotifier(self.factory)
        return FanOutNotifier.from_config(config, self.factory)

    @property
    def escalator(self) -> FanOutNotifier | None:
        """The notifier when it has channels to escalate to (None for the bare outbox)."""
        from evolution.notifications.fanout import FanOutNotifier

        return self.notifier if isinstance(self.notifier, FanOutNotifier) else None

    @cached_property
    def quota(self) -> QuotaManager:
        from evolution.registry.quota import QuotaManager

        return QuotaManager(
            self.factory,
            price_per_gpu_hour_usd=self.settings.gpu_hour_price_usd,
            cpu_gpu_hour_factor=self.settings.cpu_gpu_hour_factor,
        )

    @cached_property
    def breaker(self) -> CircuitBreaker:
        from evolution.registry.circuit_breaker import CircuitBreaker

        return CircuitBreaker(self.factory)

    @cached_property
    def outcomes(self) -> OutcomeJoiner:
        from evolution.data.outcomes import OutcomeJoiner

        return OutcomeJoiner(self.factory)

    @cached_property
    def loader(self) -> ModelLoader:
        from evolution.training.loader import ModelLoader

        return ModelLoader(self.store, self.keyring)

    @cached_property
    def users(self) -> UserService:
        from evolution.governance.users import UserService

        return UserService(self.factory)

    @cached_property
    def tokens(self) -> TokenService:
        from evolution.governance.tokens import TokenService

        return TokenService(self.factory)

    @cached_property
    def baselines(self) -> BaselineService:
        from evolution.drift.baselines import BaselineService

        return BaselineService(
            self.registry, self.tenants, self.snapshots, self.loader, self.store, self.signer
        )

    @cached_property
    def drift_scanner(self) -> DriftScanner:
        from evolution.drift.scanner import DriftScanner

        return DriftScanner(
            self.registry,
            self.tenants,
            self.snapshots,
            self.drift_reports,
            self.loader,
            self.keyring,
            self.notifier,
            self.baselines,
            quality=self.baseline_quality,
            holds=self.snapshot_holds,
        )

    @cached_property
    def baseline_quality(self) -> BaselineQualityService:
        from evolution.drift.quality_backfill import BaselineQualityService

        return BaselineQualityService(self.factory, self.snapshots, self.signer, self.keyring)

    @cached_property
    def snapshot_holds(self) -> SnapshotHolds:
        from evolution.data.quality_holds import SnapshotHolds

        return SnapshotHolds(self.factory)

    @cached_property
    def approval_tickets(self) -> ApprovalTickets:
        from evolution.governance.approval_tickets import ApprovalTickets

        return ApprovalTickets(self.factory, self.signer, self.keyring, self.notifier)

    @cached_property
    def economics(self) -> EconomicsService:
        from evolution.governance.economics_queries import EconomicsService

        return EconomicsService(self.factory, self.registry, self.tenants, self.quota)

    @cached_property
    def canary(self) -> CanaryService:
        from evolution.canary.service import CanaryService

        return CanaryService(self.outcomes)

    @cached_property
    def retention(self) -> RetentionService:
        from evolution.governance.garbage_collection import RetentionService

        return RetentionService(self.factory, self.store)

    def predictor(
        self,
        *,
        canary_share: float | None = None,
        refresh_s: float = 1.0,
        records_write_behind_s: float | None = None,
    ) -> Predictor:
        """A serving predictor (each holds its own model cache); the canary share defaults to the settings'."""
        from evolution.serving.buffer import PredictionBuffer
        from evolution.serving.predictor import Predictor

        share = self.settings.canary_share if canary_share is None else canary_share
        return Predictor(
            self.registry,
            self.loader,
            self.outcomes,
            share,
            refresh_s=refresh_s,
            records=PredictionBuffer(
                self.prediction_writer.record_predictions, write_behind_s=records_write_behind_s
            ),
            tenants=self.tenants,
            watched_predecessor=self.watches.watched_predecessor,
        )

    @cached_property
    def stranded_watches(self) -> StrandedWatches:
        from evolution.canary.watch_resume import StrandedWatches

        return StrandedWatches(self.factory, self.notifier)

    @cached_property
    def watches(self) -> PostPromotionWatches:
        from evolution.canary.watch import PostPromotionWatches

        return PostPromotionWatches(self.factory, self.registry, self.outcomes, self.notifier)

    @cached_property
    def prediction_writer(self) -> OutcomeJoiner:
        """Where a predictor writes its prediction records, in the request. On PostgreSQL, through a pool of its own
        whose connections are not pinged at each checkout (a round trip on every request's path): a connection the
        database dropped fails that write, the buffer keeps the records and writes them again on a fresh one (the
        pool is invalidated on a disconnect), so no request fails for it."""
        from evolution.data.outcomes import OutcomeJoiner
        from evolution.registry.db import make_session_factory

        if self.records_engine is None:
            return self.outcomes
        return OutcomeJoiner(make_session_factory(self.records_engine))

    @cached_property
    def records_engine(self) -> Engine | None:
        from evolution.registry.db import make_engine

        if self.engine.dialect.name != "postgresql":
            return None
        return make_engine(
            self.settings.resolved_database_url, pool_pre_ping=False, pool_size=4, max_overflow=16
        )

    def token_authenticator(self, fresh_s: float | None = None) -> TokenAuthenticator:
        """API tokens checked against the registry, each answer cached ``fresh_s`` (longer while it is down; None:
        the authenticator's default)."""
        from evolution.serving.auth import DEFAULT_FRESH_S, TokenAuthenticator

        return TokenAuthenticator(
            self.tokens.authenticate_token, fresh_s=DEFAULT_FRESH_S if fresh_s is None else fresh_s
        )

    def candidate_builder(self, compute: ComputeBackend | None = None) -> CandidateBuilder:
        """A builder with its own training slots (one per worker); ``compute`` replaces the configured backend."""
        from evolution.training.candidates import CandidateBuilder
        from evolution.training.slots import TrainingSlots

        settings = self.settings
        kubernetes = settings.kubernetes if settings.compute_backend == "kubernetes" else None
        return CandidateBuilder(
            registry=self.registry,
            tenants=self.tenants,
            snapshots=self.snapshots,
            store=self.store,
            signer=self.signer,
            keyring=self.keyring,
            loader=self.loader,
            compute=compute or build_compute_backend(settings),
            quota=self.quota,
            # Kubernetes: the worker and the training pods share one volume, mounted at the same path in both.
            work_dir=Path(kubernetes.work_mount_path) if kubernetes is not None else settings.work_dir,
            timeout_s=settings.training_timeout_s,
            memory_limit_mb=settings.training_memory_limit_mb,
            # GPU-hours are charged as wall time x the GPUs a training pod requests (none locally).
            gpus=kubernetes.gpus if kubernetes is not None else 0,
            slots=TrainingSlots(settings.max_concurrent_trainings),
            definitions=self.model_definitions,  # each retraining reads the definition in force when it starts
        )

    def close(self) -> None:
        delivery = self.__dict__.get("lineage_delivery")
        if delivery is not None:
            delivery.close()
        self.engine.dispose()
        records_engine = self.__dict__.get("records_engine")
        if records_engine is not None:
            records_engine.dispose()


def build_artifact_store(settings: Settings) -> ArtifactStore:
    if settings.artifact_backend == "s3":
        from evolution.integrity.s3_artifacts import S3ArtifactStore

        assert settings.s3 is not None  # the settings refuse s3 without its section
        return S3ArtifactStore(settings.s3)
    from evolution.integrity.artifacts import FilesystemArtifactStore

    return FilesystemArtifactStore(settings.artifacts_dir)


def build_signer(settings: Settings) -> Signer:
    if settings.signer_backend == "kms":
        from evolution.integrity.kms_signing import KmsSigner

        assert settings.kms is not None
        return KmsSigner.from_config(settings.kms)
    from evolution.integrity.signing import LocalSigner

    return LocalSigner(settings.keys_dir)


def build_compute_backend(settings: Settings) -> ComputeBackend:
    if settings.compute_backend == "kubernetes":
        from evolution.training.kubernetes_backend import KubernetesJobBackend

        assert settings.kubernetes is not None
        return KubernetesJobBackend(settings.kubernetes)
    from evolution.training.local_backend import LocalSubprocessBackend

    return LocalSubprocessBackend()


def build_services(settings: Settings, migrate: bool = True) -> Services:
    """The backends the settings choose: embedded defaults (SQLite, the home dir, a local ECDSA P-256 key) or
    PostgreSQL, S3/MinIO and AWS KMS. Migrations run as the schema's owner; the services use the app's role."""
    from evolution.registry.db import connected, make_engine, make_session_factory, upgrade_to_head

    settings.home.mkdir(parents=True, exist_ok=True)
    if migrate:
        upgrade_to_head(settings.resolved_owner_database_url)
    engine = make_engine(settings.resolved_database_url)
    if engine.dialect.name == "postgresql":
        # The application's role may connect differently from the owner's (its own certificate): a wrong CA or
        # a refused login is one line here, at start, rather than a traceback at the first query.
        try:
            with connected(engine, settings.resolved_database_url):
                pass
        except BaseException:
            engine.dispose()
            raise
    services = Services(
        settings=settings,
        engine=engine,
        factory=make_session_factory(engine),
        store=build_artifact_store(settings),
        signer=build_signer(settings),
    )
    services.audit_checkpoints.install()
    return services
