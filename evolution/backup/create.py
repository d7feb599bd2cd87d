"""Create a whole backup of a home: registry, artifacts and keys, under one signed manifest.

Layout of a backup location (``DEST``)::

    DEST/pool/                    artifacts, content-addressed, shared by every backup in DEST (incremental)
    DEST/<id>/manifest.json       what the backup holds (BackupManifest), written last
    DEST/<id>/manifest.sig.json   signature over manifest.json, with the signer's public key
    DEST/<id>/registry/           registry.db (SQLite) or base.tar.gz + pg_wal.tar.gz + backup_manifest (PostgreSQL)
    DEST/<id>/keys/               the key directory, files 0600 (only with --what keys)

A backup is written into ``DEST/<id>.incomplete`` and renamed when its manifest is in place, so an interrupted
run never looks like a backup. Restoring one: :mod:`evolution.backup.restore`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from evolution.backup.artifacts_backup import backup_artifacts, store_tenants
from evolution.backup.home import Home, backend_of
from evolution.backup.keys_backup import backup_keys
from evolution.backup.manifest import (
    INCOMPLETE_SUFFIX,
    Backend,
    BackupManifest,
    Part,
    Progress,
    RegistryPart,
    new_backup_id,
    no_progress,
    pool_of,
    record_file,
    records_under,
    write_manifest,
)
from evolution.backup.postgres_backup import PgFormat, take_base_backup
from evolution.backup.postgres_server import PgConnection, PgTools
from evolution.backup.sqlite_backup import backup_sqlite, sqlite_path
from evolution.integrity.artifacts import ArtifactStore
from evolution.integrity.signing import Signer
from evolution.progress import ProgressMeter
from evolution.timeutil import utcnow

logger = logging.getLogger(__name__)


@dataclass
class BackupResult:
    path: Path
    manifest: BackupManifest
    seconds: float

    @property
    def problems(self) -> list[str]:
        return list(self.manifest.artifacts.problems) if self.manifest.artifacts else []


def create_backup(
    settings: Home,
    dest: Path,
    parts: Sequence[Part],
    *,
    signer: Signer,
    store: ArtifactStore,
    registry_tenants: Iterable[str] = (),
    wal_archive: Path | None = None,
    pg_format: PgFormat = "tar",
    pg_url: str | None = None,
    pg_tools: PgTools | None = None,
    progress: Progress = no_progress,
    meter: ProgressMeter | None = None,
) -> BackupResult:
    """Back up ``parts`` of the home ``settings`` describes into a new backup below ``dest``.

    ``pg_url``: the PostgreSQL role to take the base backup as (it needs REPLICATION); default: the schema
    owner's URL, else the configured one. ``meter``: a task over the artifacts backed up.
    """
    started = time.monotonic()
    url = settings.resolved_database_url
    backend = backend_of(url)
    backup_url = pg_url or settings.resolved_owner_database_url
    dest.mkdir(parents=True, exist_ok=True)
    started_at = utcnow()
    backup_id = new_backup_id(started_at)
    work = dest / f"{backup_id}{INCOMPLETE_SUFFIX}"
    work.mkdir(mode=0o700)
    manifest = BackupManifest(
        backup_id=backup_id,
        started_at=started_at,
        finished_at=started_at,
        parts=list(parts),
        home=str(settings.home.resolve()),
        database_backend=backend,
        signer_key_id=signer.key_id,
    )
    if "registry" in parts:
        progress(f"registry ({backend}) …")
        source_url = url if backend == "sqlite" else backup_url
        manifest.registry = _backup_registry(
            source_url, backend, work, wal_archive, pg_format, pg_tools, progress
        )
    if "artifacts" in parts:
        progress("artifacts …")
        tenants = store_tenants(store, registry_tenants)
        manifest.artifacts = backup_artifacts(store, tenants, pool_of(work), progress=progress, meter=meter)
    if "keys" in parts:
        progress("keys (private: keep this backup in a secret store) …")
        manifest.keys = backup_keys(settings.keys_dir, work)
        progress(f"  {len(manifest.keys.files)} key files, mode 0600")
    manifest.finished_at = utcnow()
    write_manifest(work, manifest, signer)
    final = dest / backup_id
    os.rename(work, final)
    seconds = time.monotonic() - started
    progress(f"backup {backup_id} written to {final} in {seconds:.1f} s ({manifest.size_bytes / 1e6:.1f} MB)")
    return BackupResult(final, manifest, seconds)


def _backup_registry(
    url: str,
    backend: Backend,
    work: Path,
    wal_archive: Path | None,
    pg_format: PgFormat,
    pg_tools: PgTools | None,
    progress: Progress,
) -> RegistryPart:
    registry_dir = work / "registry"
    registry_dir.mkdir(mode=0o700)
    if backend == "sqlite":
        copy = backup_sqlite(sqlite_path(url), registry_dir / "registry.db")
        progress(
            f"  SQLite copy: {copy.pages} pages, {sum(copy.row_counts.values())} rows, integrity_check ok"
        )
        return RegistryPart(
            backend="sqlite",
            files=[record_file(work, copy.path)],
            consistent_at=copy.consistent_at,
            schema_revision=copy.schema_revision,
            row_counts=copy.row_counts,
        )
    conn = PgConnection.from_url(url)
    tools = pg_tools or PgTools.discover()
    base = take_base_backup(conn, registry_dir / "base", tools=tools, fmt=pg_format, progress=progress)
    revision = None
    try:
        with conn.connect() as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
    except Exception as error:  # informational only
        logger.warning("could not read the schema revision: %s", error)
    return RegistryPart(
        backend="postgresql",
        files=records_under(work, registry_dir),
        consistent_at=base.consistent_at,
        schema_revision=revision,
        pg_format=base.pg_format,
        server_version=base.server_version,
        timeline=base.timeline,
        start_lsn=base.start_lsn,
        end_lsn=base.end_lsn,
        wal_archive=str(wal_archive.resolve()) if wal_archive else None,
        archive_mode=base.archive_mode,
        archive_timeout_s=base.archive_timeout_s,
        pitr_possible=base.pitr_possible,
    )
