"""Builds the adapters and services a process needs from one Settings object.

Each process (worker, serving, dashboard, CLI) calls :func:`build_services` once in its entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from evolution.baselines import BaselineService
from evolution.drift_reports import DriftReportService
from evolution.events import EventIngestor
from evolution.integrity.artifacts import ArtifactStore, FilesystemArtifactStore
from evolution.integrity.signing import KeyRing, LocalEd25519Signer, Signer
from evolution.models import ModelLoader
from evolution.notify import OutboxNotifier
from evolution.outcomes import OutcomeJoiner
from evolution.quota import QuotaManager
from evolution.registry.db import make_engine, make_session_factory, upgrade_to_head
from evolution.registry.service import ModelRegistryService
from evolution.settings import Settings
from evolution.snapshots import DatasetSnapshotService
from evolution.users import UserService


@dataclass
class Services:
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    store: ArtifactStore
    signer: Signer

    @cached_property
    def keyring(self) -> KeyRing:
        ring = KeyRing()
        ring.add(self.signer.key_id, self.signer.public_key_pem())
        return ring

    @cached_property
    def registry(self) -> ModelRegistryService:
        return ModelRegistryService(self.factory)

    @cached_property
    def snapshots(self) -> DatasetSnapshotService:
        return DatasetSnapshotService(self.factory, self.store, self.signer)

    @cached_property
    def events(self) -> EventIngestor:
        return EventIngestor(self.factory)

    @cached_property
    def drift_reports(self) -> DriftReportService:
        return DriftReportService(self.factory, self.store, self.signer)

    @cached_property
    def notifier(self) -> OutboxNotifier:
        return OutboxNotifier(self.factory)

    @cached_property
    def quota(self) -> QuotaManager:
        return QuotaManager(self.factory)

    @cached_property
    def outcomes(self) -> OutcomeJoiner:
        return OutcomeJoiner(self.factory)

    @cached_property
    def loader(self) -> ModelLoader:
        return ModelLoader(self.store, self.keyring)

    @cached_property
    def users(self) -> UserService:
        return UserService(self.factory)

    @cached_property
    def baselines(self) -> BaselineService:
        return BaselineService(self.registry, self.snapshots, self.loader, self.store, self.signer)

    def close(self) -> None:
        self.engine.dispose()


def build_services(settings: Settings, migrate: bool = True) -> Services:
    """Embedded defaults: SQLite (or the configured URL), a filesystem artifact store, a local Ed25519 key."""
    settings.home.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    if migrate:
        upgrade_to_head(url)
    engine = make_engine(url)
    return Services(
        settings=settings,
        engine=engine,
        factory=make_session_factory(engine),
        store=FilesystemArtifactStore(settings.artifacts_dir),
        signer=LocalEd25519Signer(settings.keys_dir),
    )
