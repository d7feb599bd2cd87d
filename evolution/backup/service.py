"""Create and restore whole backups: registry, artifacts and keys, under one signed manifest.

Layout of a backup location (``DEST``)::

    DEST/pool/                    artifacts, content-addressed, shared by every backup in DEST (incremental)
    DEST/<id>/manifest.json       what the backup holds (BackupManifest), written last
    DEST/<id>/manifest.sig.json   signature over manifest.json, with the signer's public key
    DEST/<id>/registry/           registry.db (SQLite) or base.tar.gz + pg_wal.tar.gz + backup_manifest (PostgreSQL)
    DEST/<id>/keys/               the key directory, files 0600 (only with --what keys)

A backup is written into ``DEST/<id>.incomplete`` and renamed when its manifest is in place, so an interrupted
run never looks like a backup. A restore first checks everything it is about to use (the manifest's signature,
every file's and every artifact's SHA-256) and refuses before changing anything if one does not match.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from evolution.backup.artifacts_backup import (
    ArtifactsRestore,
    backup_artifacts,
    check_pool,
    restore_artifacts,
    store_tenants,
)
from evolution.backup.keys_backup import KeysRestore, backup_keys, restore_keys, signing_key_id
from evolution.backup.manifest import (
    ALL_PARTS,
    INCOMPLETE_SUFFIX,
    MANIFEST_NAME,
    ArtifactRecord,
    Backend,
    BackupListing,
    BackupManifest,
    Part,
    Progress,
    RegistryPart,
    check_files,
    list_backups,
    new_backup_id,
    no_progress,
    pool_of,
    read_manifest,
    record_file,
    records_under,
    safe_join,
    verify_manifest_signature,
    write_manifest,
)
from evolution.backup.postgres_backup import (
    PgConnection,
    PgFormat,
    PgTools,
    RecoveredServer,
    RecoveryTarget,
    port_in_use,
    restore_base_backup,
    take_base_backup,
)
from evolution.backup.sqlite_backup import backup_sqlite, restore_sqlite, sqlite_path
from evolution.errors import Conflict, IntegrityViolation, InvalidInput, NotFound
from evolution.integrity.artifacts import ArtifactStore
from evolution.integrity.signing import Signer
from evolution.timeutil import as_utc, utcnow

logger = logging.getLogger(__name__)


class Home(Protocol):
    """Where a home's parts live: what backup and restore read of the settings (``Settings`` satisfies it)."""

    @property
    def home(self) -> Path: ...
    @property
    def artifacts_dir(self) -> Path: ...
    @property
    def keys_dir(self) -> Path: ...
    @property
    def resolved_database_url(self) -> str: ...
    @property
    def resolved_owner_database_url(self) -> str: ...


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "")


def backend_of(url: str) -> Backend:
    if url.startswith("sqlite"):
        return "sqlite"
    if url.startswith("postgresql"):
        return "postgresql"
    raise InvalidInput(f"backups support SQLite and PostgreSQL registries, not {url.split(':', 1)[0]}")


def parse_parts(text: str | Iterable[str] | None) -> list[Part]:
    """``"registry,artifacts"`` → the parts, in their canonical order; unknown names are refused."""
    if text is None:
        return list(ALL_PARTS)
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = sorted(set(names) - set(ALL_PARTS))
    if unknown or not names:
        raise InvalidInput(f"--what takes a comma-separated list of {', '.join(ALL_PARTS)}; got {text!r}")
    return [p for p in ALL_PARTS if p in names]


# -- create ---------------------------------------------------------------------------------------------


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
) -> BackupResult:
    """Back up ``parts`` of the home ``settings`` describes into a new backup below ``dest``.

    ``pg_url``: the PostgreSQL role to take the base backup as (it needs REPLICATION); default: the schema
    owner's URL, else the configured one.
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
        manifest.artifacts = backup_artifacts(store, tenants, pool_of(work), progress=progress)
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


# -- choose -----------------------------------------------------------------------------------------


@dataclass
class Chosen:
    listing: BackupListing
    manifest: BackupManifest
    later: list[BackupManifest]  # complete backups after it in the same location (for artifacts)


def choose_backup(
    source: Path, to_time: datetime | None = None, parts: Sequence[Part] | None = None
) -> Chosen:
    """The backup to restore: ``source`` itself if it is one, else the newest fitting one below it.

    With ``to_time``: the newest backup whose registry copy is consistent at or before that time (for
    PostgreSQL, the base backup to replay the WAL archive from).
    """
    if not source.exists():
        raise NotFound(f"backup location {source} does not exist")
    single = (source / MANIFEST_NAME).exists()
    listings = [b for b in list_backups(source.parent if single else source) if b.complete and b.manifest]
    wanted = set(parts or ())
    if single:
        candidates = [b for b in listings if b.path.resolve() == source.resolve()]
        if not candidates:  # listed under another name? read it directly
            manifest = read_manifest(source)
            candidates = [
                BackupListing(path=source, backup_id=manifest.backup_id, complete=True, manifest=manifest)
            ]
    else:
        candidates = list(listings)
        need_registry = "registry" in wanted or not wanted
        with_registry = [b for b in candidates if b.manifest and b.manifest.registry]
        if need_registry and with_registry:
            candidates = with_registry
        if wanted:
            candidates = [b for b in candidates if b.manifest and wanted & set(b.manifest.parts)]
        if to_time is not None:
            candidates = [b for b in candidates if b.manifest and _point_of(b.manifest) <= to_time]
    if not candidates:
        when = f" taken before {to_time.isoformat()}" if to_time else ""
        raise NotFound(f"no complete backup{when} in {source}")
    chosen = candidates[-1]
    assert chosen.manifest is not None
    if to_time is not None and _point_of(chosen.manifest) > to_time:
        raise InvalidInput(
            f"backup {chosen.backup_id} is consistent at {_point_of(chosen.manifest).isoformat()}, after the "
            f"requested {to_time.isoformat()}: restore from an older backup"
        )
    chosen_path = chosen.path.resolve()
    index = next((i for i, b in enumerate(listings) if b.path.resolve() == chosen_path), None)
    after = (
        listings[index + 1 :]
        if index is not None
        else [b for b in listings if b.manifest and b.manifest.started_at > chosen.manifest.started_at]
    )
    later = [b.manifest for b in after if b.manifest and b.manifest.artifacts]
    return Chosen(chosen, chosen.manifest, later)


def _point_of(manifest: BackupManifest) -> datetime:
    return as_utc(manifest.registry.consistent_at if manifest.registry else manifest.finished_at)


# -- restore --------------------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    backup: BackupManifest
    parts: list[Part]
    seconds: float = 0.0
    registry_saved: Path | None = None
    postgres: RecoveredServer | None = None
    recovery_target: str = ""
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


def check_backup(
    chosen: Chosen,
    parts: Sequence[Part],
    entries: Sequence[ArtifactRecord] = (),
    progress: Progress = no_progress,
) -> list[str]:
    """Signatures and digests of everything a restore of ``parts`` would use; the problems (empty: sound)."""
    backup_dir = chosen.listing.path
    problems = []
    used = {chosen.manifest.backup_id} | {e_id for e_id in _sources_of(chosen, entries)}
    for backup_id in sorted(used):
        try:
            verify_manifest_signature(backup_dir.parent / backup_id)
        except IntegrityViolation as error:
            problems.append(str(error))
    if problems:
        return problems
    manifest = chosen.manifest
    records = []
    if "registry" in parts and manifest.registry:
        records += manifest.registry.files
    if "keys" in parts and manifest.keys:
        records += manifest.keys.files
    progress(f"checking {len(records)} files of backup {manifest.backup_id} …")
    problems += check_files(backup_dir, records, progress)
    if "artifacts" in parts:
        progress(f"checking {len(entries)} artifacts in the pool …")
        problems += check_pool(pool_of(backup_dir), entries, progress)
    return problems


def _sources_of(chosen: Chosen, entries: Sequence[ArtifactRecord]) -> set[str]:
    """The later backups whose manifests contributed some of ``entries``."""
    wanted = {(e.tenant, e.kind, e.name) for e in entries}
    out = set()
    for manifest in chosen.later:
        if manifest.artifacts and any(
            (e.tenant, e.kind, e.name) in wanted for e in manifest.artifacts.entries
        ):
            out.add(manifest.backup_id)
    return out


def artifact_entries(
    chosen: Chosen, to_time: datetime | None, include_later: bool = True
) -> list[ArtifactRecord]:
    """The chosen backup's artifacts, plus, when the registry is recovered past it (PostgreSQL with a WAL
    archive), the blobs of later backups (content-addressed: an unreferenced extra is harmless, and one the
    recovered rows need would otherwise be missing) and their named objects written up to ``to_time``."""
    seen: dict[tuple[str, str, str], ArtifactRecord] = {}
    sources = [chosen.manifest, *(chosen.later if include_later else [])]
    for manifest in sources:
        if manifest.artifacts is None:
            continue
        later = manifest is not chosen.manifest
        for entry in manifest.artifacts.entries:
            if (
                later
                and entry.kind == "object"
                and to_time is not None
                and as_utc(manifest.finished_at) > to_time
            ):
                continue
            seen.setdefault((entry.tenant, entry.kind, entry.name), entry)
    return list(seen.values())


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
) -> RestoreResult:
    """Restore a backup into the home and database ``settings`` describe; see the module docs.

    PostgreSQL: the base backup is recovered into ``pg_data_dir`` (new or empty; with ``overwrite`` an
    existing one is moved aside) and the server started on the configured URL's port, replaying
    ``wal_archive`` (default: the archive the backup names) up to ``to_time`` or to its end. The server is left
    running; the caller verifies through it.

    ``signer_key_id``: the key id of the home's signer when it is not a local key file (a KMS key); a local
    key is read from the key directory (or the backup, when its keys are restored).
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
    result = RestoreResult(backup=manifest, parts=list(parts))
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
    problems = check_backup(chosen, parts, entries, progress)
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
            pool_of(chosen.listing.path), entries, store, repair=overwrite, progress=progress
        )
        a = result.artifacts
        progress(
            f"  {a.written} written ({a.bytes_written / 1e6:.1f} MB), {a.present} already there, "
            f"{a.repaired} repaired"
        )
    result.seconds = time.monotonic() - started
    progress(f"restore finished in {result.seconds:.1f} s")
    return result
