"""Restore a whole backup into a home: keys, then the registry (SQLite copy or PostgreSQL recovery), then artifacts.

A restore first checks everything it is about to use (the manifest's signature, every file's and every
artifact's SHA-256; :mod:`evolution.backup.selection`) and refuses before changing anything if one does not
match, if the home is not empty without consent, or if the backup's signing key is not the home's. The registry
and keys it replaces are kept aside, not deleted. The backup layout: :mod:`evolution.backup.create`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from evolution.backup.artifacts_backup import ArtifactsRestore, restore_artifacts
from evolution.backup.home import Home, backend_of
from evolution.backup.keys_backup import KeysRestore, restore_keys, signing_key_id
from evolution.backup.manifest import BackupManifest, Part, Progress, no_progress, pool_of, safe_join
from evolution.backup.postgres_conf import RecoveryTarget
from evolution.backup.postgres_recovery import RecoveredServer, restore_base_backup
from evolution.backup.postgres_server import PgConnection, PgTools, port_in_use
from evolution.backup.selection import artifact_entries, check_backup, choose_backup
from evolution.backup.sqlite_backup import restore_sqlite, sqlite_path
from evolution.errors import Conflict, IntegrityViolation, InvalidInput
from evolution.integrity.artifacts import ArtifactStore
from evolution.progress import ProgressMeter
from evolution.timeutil import as_utc, utcnow

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "")


@dataclass
class RestoreResult:
    backup: BackupManifest
    parts: list[Part]
    seconds: float = 0.0
    registry_saved: Path | None = None
    postgres: RecoveredServer | None = None
    recovery_target: str = ""
    target_time: datetime | None = None  # the time the registry was recovered to, when one was asked for
    artifacts: ArtifactsRestore | None = None
    keys: KeysRestore | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return list(self.artifacts.problems) if self.artifacts else []


def home_contents(settings: Home, parts: Sequence[Part], pg_data_dir: Path | None = None) -> list[str]:
    """What a restore of ``parts`` would overwrite in this home (empty: nothing, it is fresh)."""
    found = []
    url = settings.resolved_database_url
    if "registry" in parts:
        if backend_of(url) == "sqlite":
            path = sqlite_path(url)
            if path.exists() and path.stat().st_size > 0:
                found.append(f"registry database {path}")
        elif pg_data_dir is not None and pg_data_dir.exists() and any(pg_data_dir.iterdir()):
            found.append(f"PostgreSQL data directory {pg_data_dir}")
    for part, directory in (("artifacts", settings.artifacts_dir), ("keys", settings.keys_dir)):
        if part in parts and directory.is_dir() and any(p.is_file() for p in directory.rglob("*")):
            found.append(f"{part} in {directory}")
    return found


def restore_backup(
    settings: Home,
    source: Path,
    *,
    store: ArtifactStore,
    parts: Sequence[Part] | None = None,
    to_time: datetime | None = None,
    overwrite: bool = False,
    pg_data_dir: Path | None = None,
    wal_archive: Path | None = None,
    pg_socket_dir: Path | None = None,
    pg_settings: Mapping[str, str] | None = None,
    pg_tools: PgTools | None = None,
    signer_key_id: str | None = None,
    progress: Progress = no_progress,
    meter: ProgressMeter | None = None,
) -> RestoreResult:
    """Restore a backup into the home and database ``settings`` describe; see the module docs.

    PostgreSQL: the base backup is recovered into ``pg_data_dir`` (new or empty; with ``overwrite`` an
    existing one is moved aside) and the server started on the configured URL's port, replaying
    ``wal_archive`` (default: the archive the backup names) up to ``to_time`` or to its end. The server is left
    running; the caller verifies through it.

    ``signer_key_id``: the key id of the home's signer when it is not a local key file (a KMS key); a local
    key is read from the key directory (or the backup, when its keys are restored). ``meter``: tasks over the
    backup's checks and the artifacts restored.
    """
    started = time.monotonic()
    to_time = as_utc(to_time) if to_time is not None else None
    chosen = choose_backup(source, to_time, parts)
    manifest = chosen.manifest
    if parts is None:
        parts = list(manifest.parts)
    missing = [p for p in parts if p not in manifest.parts]
    if missing:
        raise InvalidInput(
            f"backup {manifest.backup_id} holds {', '.join(manifest.parts)}, not {', '.join(missing)}"
        )
    url = settings.resolved_database_url
    backend = backend_of(url)
    if "registry" in parts and manifest.registry and manifest.registry.backend != backend:
        raise InvalidInput(
            f"backup {manifest.backup_id} is of a {manifest.registry.backend} registry; this home uses {backend}"
        )
    if to_time is not None and "registry" not in parts:
        raise InvalidInput("--to-time applies to the registry: restore it too (--what registry,…)")
    result = RestoreResult(backup=manifest, parts=list(parts), target_time=to_time)
    progress(f"restoring backup {manifest.backup_id} ({', '.join(parts)}) into {settings.home} …")

    # 1. Refuse early: a damaged backup, a live home without consent, a key that does not match.
    pg_recovery = "registry" in parts and backend == "postgresql"
    conn = PgConnection.from_url(url) if pg_recovery else None
    archive: Path | None = None
    if pg_recovery:
        assert conn is not None and manifest.registry is not None
        if pg_data_dir is None:
            raise InvalidInput(
                "restoring a PostgreSQL registry needs --pg-data-dir: where to lay the base backup down"
            )
        if not (conn.host in LOCAL_HOSTS or conn.host.startswith("/")):
            raise InvalidInput(
                f"the configured database is on {conn.host}: run the restore on that host (it starts the server)"
            )
        if port_in_use("127.0.0.1", conn.port):
            raise Conflict(
                f"a server is already listening on port {conn.port}: stop it before recovering into that port"
            )
        archive = wal_archive or (
            Path(manifest.registry.wal_archive) if manifest.registry.wal_archive else None
        )
        if archive is None and to_time is not None:
            raise InvalidInput("point-in-time recovery needs the WAL archive: pass --wal-archive")
    # Recovered past the base backup (WAL replay), the registry may name artifacts only later backups hold.
    entries = (
        artifact_entries(chosen, to_time, include_later=archive is not None) if "artifacts" in parts else []
    )
    live = home_contents(settings, parts, pg_data_dir)
    if live and not overwrite:
        raise Conflict(
            f"{settings.home} is not empty ({'; '.join(live)}): pass --yes to restore over it "
            "(the current registry and keys are kept aside, not deleted)"
        )
    problems = check_backup(chosen, parts, entries, progress, meter)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; … {len(problems) - 5} more" if len(problems) > 5 else "")
        raise IntegrityViolation(
            f"backup {manifest.backup_id} does not match its manifest: {shown}. Nothing was restored"
        )
    progress("  backup sound: signature and every digest match")
    restoring_keys = "keys" in parts and manifest.keys is not None
    home_key = (
        manifest.keys.signing_key_id
        if restoring_keys and manifest.keys and manifest.keys.signing_key_id
        else signer_key_id or signing_key_id(settings.keys_dir)
    )
    if home_key is not None and home_key != manifest.signer_key_id:
        raise IntegrityViolation(
            f"backup {manifest.backup_id} was signed by {manifest.signer_key_id}, but the home's signing key "
            f"{'in the backup ' if restoring_keys else ''}is {home_key}: restore the keys that belong to it first"
        )
    if home_key is None:
        progress(
            "  warning: neither this home nor the backup has a signing key: restore the keys backup first, "
            "or every signature will fail verification"
        )

    # 2. Keys, so that the home signs and verifies with the backup's key; then the registry; then artifacts.
    if "keys" in parts and manifest.keys:
        progress(f"keys → {settings.keys_dir} …")
        result.keys = restore_keys(chosen.listing.path, manifest.keys, settings.keys_dir, replace=overwrite)
        progress(f"  {result.keys.written} written, {result.keys.present} already there")
    if "registry" in parts and manifest.registry:
        registry = manifest.registry
        if registry.backend == "sqlite":
            target = sqlite_path(url)
            progress(f"registry → {target} …")
            result.registry_saved = restore_sqlite(
                safe_join(chosen.listing.path, registry.files[0].path), target
            )
            if result.registry_saved:
                progress(f"  the previous registry is kept as {result.registry_saved}")
            if to_time is not None:
                result.notes.append(
                    f"SQLite has no point-in-time recovery: restored the backup consistent at "
                    f"{as_utc(registry.consistent_at).isoformat()}, the newest at or before {to_time.isoformat()}"
                )
            result.recovery_target = f"backup point {as_utc(registry.consistent_at).isoformat()}"
        else:
            assert conn is not None and pg_data_dir is not None
            if pg_data_dir.exists() and any(pg_data_dir.iterdir()):
                aside = pg_data_dir.with_name(
                    f"{pg_data_dir.name}.pre-restore-{utcnow().strftime('%Y%m%dT%H%M%SZ')}"
                )
                os.rename(pg_data_dir, aside)
                progress(f"  the previous data directory is kept as {aside}")
                result.registry_saved = aside
            recovery = RecoveryTarget(time=to_time) if to_time is not None else RecoveryTarget()
            result.recovery_target = recovery.describe() if archive else "the end of the base backup"
            progress(f"registry → PostgreSQL data directory {pg_data_dir} …")
            result.postgres = restore_base_backup(
                safe_join(chosen.listing.path, "registry/base"),
                registry.pg_format or "tar",
                pg_data_dir,
                port=conn.port,
                tools=pg_tools or PgTools.discover(),
                wal_archive=archive,
                target=recovery,
                socket_dir=pg_socket_dir or (Path(conn.host) if conn.host.startswith("/") else None),
                settings=pg_settings,
                progress=progress,
            )
    if "artifacts" in parts and manifest.artifacts is not None:
        progress(f"artifacts → {settings.artifacts_dir} ({len(entries)}) …")
        result.artifacts = restore_artifacts(
            pool_of(chosen.listing.path), entries, store, repair=overwrite, progress=progress, meter=meter
        )
        a = result.artifacts
        progress(
            f"  {a.written} written ({a.bytes_written / 1e6:.1f} MB), {a.present} already there, "
            f"{a.repaired} repaired"
        )
    result.seconds = time.monotonic() - started
    progress(f"restore finished in {result.seconds:.1f} s")
    return result
