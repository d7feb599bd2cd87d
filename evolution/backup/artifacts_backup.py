"""The artifact store: every blob and named object of every tenant, copied into a content-addressed pool.

Reading goes through the :class:`ArtifactStore` port only (``list_digests``/``open`` for blobs,
``list_objects``/``get_object`` for named objects), so the same code backs up the embedded filesystem store and
an S3 store. The one thing the port cannot say is which tenants exist: they come from the registry, plus, for the
embedded :class:`FilesystemArtifactStore`, the tenant directories on disk (so that a tenant with artifacts but no
registry row is not skipped).

The pool (``<backup root>/pool``) is itself a :class:`FilesystemArtifactStore`. Blobs are content-addressed, so
a blob already in the pool is neither read nor copied again: every backup after the first is incremental, and
each backup's manifest still lists everything it covers. Named objects are stored in the pool by the SHA-256 of
their bytes and mapped back to their keys by the manifest.

Restoring writes through the port as well (``put_file``/``put_object``), after the pool copy re-hashed to the
digest the manifest names; a mismatch is refused, never written.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from evolution.backup.manifest import (
    READ_BLOCK,
    ArtifactRecord,
    ArtifactsPart,
    Progress,
    no_progress,
)
from evolution.errors import Conflict, EvolutionError, IntegrityViolation, NotFound
from evolution.integrity.artifacts import TENANT_PATTERN, ArtifactStore, FilesystemArtifactStore
from evolution.integrity.digest_checks import verify_artifact
from evolution.progress import Advance, ProgressMeter, metered

logger = logging.getLogger(__name__)

PROGRESS_EVERY = 500


def store_tenants(store: ArtifactStore, known: Iterable[str]) -> list[str]:
    """The tenants to back up: the registry's, plus the embedded store's tenant directories."""
    tenants = {t for t in known if TENANT_PATTERN.match(t)}
    if isinstance(store, FilesystemArtifactStore) and store.root.is_dir():
        tenants |= {
            entry.name
            for entry in store.root.iterdir()
            if entry.is_dir() and not entry.is_symlink() and TENANT_PATTERN.match(entry.name)
        }
    return sorted(tenants)


def describe_store(store: ArtifactStore) -> str:
    if isinstance(store, FilesystemArtifactStore):
        return f"filesystem {store.root.resolve()} (read through the ArtifactStore port)"
    return f"{type(store).__name__} (read through the ArtifactStore port)"


def _copy_blob(
    store: ArtifactStore, tenant: str, digest: str, pool: FilesystemArtifactStore, tmp_dir: Path
) -> int:
    """Stream one blob from ``store`` into the pool, checking its digest; returns its size."""
    fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=".part")
    tmp = Path(name)
    try:
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out, store.open(tenant, digest) as reader:
            while block := reader.read(READ_BLOCK):
                h.update(block)
                size += len(block)
                out.write(block)
        if h.hexdigest() != digest:
            raise IntegrityViolation(
                f"artifact {tenant}/{digest} is corrupted: its content hashes to {h.hexdigest()}"
            )
        stored = pool.put_file(tenant, tmp)
        if stored != digest:  # the pool re-hashed what was written
            raise IntegrityViolation(f"artifact {tenant}/{digest} changed while being copied")
        return size
    finally:
        tmp.unlink(missing_ok=True)


def backup_artifacts(
    store: ArtifactStore,
    tenants: Iterable[str],
    pool_root: Path,
    *,
    progress: Progress = no_progress,
    meter: ProgressMeter | None = None,
) -> ArtifactsPart:
    """Copy every blob and named object of ``tenants`` into the pool; reuse what the pool already has.

    A corrupted artifact in the source is not copied: it is listed in ``problems`` (and the backup as a whole
    reported as failed by the caller), while everything else is still backed up. ``meter``: a task over them all.
    """
    pool = FilesystemArtifactStore(pool_root)
    tmp_dir = pool_root / ".staging"
    tmp_dir.mkdir(exist_ok=True)
    tenant_list = list(tenants)
    part = ArtifactsPart(source=describe_store(store), tenants=tenant_list, entries=[])
    listed = [(tenant, store.list_digests(tenant), store.list_objects(tenant)) for tenant in tenant_list]
    total = sum(len(digests) + len(keys) for _, digests, keys in listed)
    with metered(meter, "back up artifacts", total) as advance:
        for tenant, digests, keys in listed:
            _copy_tenant(store, tenant, digests, keys, pool, tmp_dir, part, progress, advance)
    with contextlib.suppress(OSError):  # left behind if another backup is writing into the pool
        tmp_dir.rmdir()
    progress(
        f"  artifacts: {len(part.entries)} in {len(tenant_list)} tenants, {part.copied} copied "
        f"({part.bytes_copied / 1e6:.1f} MB), {part.reused} already in the pool"
    )
    return part


def _copy_tenant(
    store: ArtifactStore,
    tenant: str,
    digests: list[str],
    keys: list[str],
    pool: FilesystemArtifactStore,
    tmp_dir: Path,
    part: ArtifactsPart,
    progress: Progress,
    advance: Advance,
) -> None:
    """One tenant's blobs and named objects into the pool, each recorded in ``part`` (or as a problem)."""
    for digest in digests:
        try:
            if pool.exists(tenant, digest):
                with pool.open(tenant, digest) as reader:  # its size only: not read again
                    size = reader.seek(0, os.SEEK_END)
                part.reused += 1
            else:
                size = _copy_blob(store, tenant, digest, pool, tmp_dir)
                part.copied += 1
                part.bytes_copied += size
        except (IntegrityViolation, NotFound) as error:
            part.problems.append(str(error))
            advance(1)
            continue
        part.bytes_total += size
        part.entries.append(ArtifactRecord(tenant=tenant, kind="blob", name=digest, sha256=digest, size=size))
        advance(1)
        seen = len(part.entries) + len(part.problems)
        if seen % PROGRESS_EVERY == 0:
            progress(f"  artifacts: {seen} seen, {part.copied} copied, {part.reused} already in the pool")
    for key in keys:
        advance(1)
        try:
            data = store.get_object(tenant, key)
        except EvolutionError as error:
            part.problems.append(f"object {tenant}/{key}: {error}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if pool.exists(tenant, digest):
            part.reused += 1
        else:
            pool.put_bytes(tenant, data)
            part.copied += 1
            part.bytes_copied += len(data)
        part.bytes_total += len(data)
        part.entries.append(
            ArtifactRecord(tenant=tenant, kind="object", name=key, sha256=digest, size=len(data))
        )


def check_pool(
    pool_root: Path,
    entries: Sequence[ArtifactRecord],
    progress: Progress = no_progress,
    meter: ProgressMeter | None = None,
) -> list[str]:
    """Re-hash every pool copy the entries name; the problems found. ``meter``: a task over the entries."""
    pool = FilesystemArtifactStore(pool_root)
    problems = []
    with metered(meter, "check the backup's artifacts", len(entries)) as advance:
        for i, entry in enumerate(entries, start=1):
            advance(1)
            try:
                size = verify_artifact(pool, entry.tenant, entry.sha256)
            except (IntegrityViolation, NotFound) as error:
                problems.append(f"{entry.kind} {entry.tenant}/{entry.name}: {error}")
                continue
            if size != entry.size:
                problems.append(
                    f"{entry.kind} {entry.tenant}/{entry.name}: {size} bytes, manifest says {entry.size}"
                )
            if i % PROGRESS_EVERY == 0:
                progress(f"  checked {i} artifacts")
    return problems


class ArtifactsRestore(BaseModel):
    written: int = 0
    present: int = 0
    repaired: int = 0
    bytes_written: int = 0
    problems: list[str] = Field(default_factory=list)


def restore_artifacts(
    pool_root: Path,
    entries: Sequence[ArtifactRecord],
    store: ArtifactStore,
    *,
    repair: bool = False,
    progress: Progress = no_progress,
    meter: ProgressMeter | None = None,
) -> ArtifactsRestore:
    """Write every entry into ``store`` through the port; what is already there (and sound) is kept.

    An artifact present in ``store`` but corrupted is replaced from the backup when ``repair`` is set (a restore
    over a live home with --yes), otherwise reported. A named object present with other bytes is reported: named
    objects are write-once. ``meter``: a task over the entries.
    """
    pool = FilesystemArtifactStore(pool_root)
    result = ArtifactsRestore()
    with metered(meter, "restore artifacts", len(entries)) as advance:
        for i, entry in enumerate(entries, start=1):
            _restore_entry(pool, entry, store, repair, result)
            advance(1)
            if i % PROGRESS_EVERY == 0:
                progress(f"  artifacts: {i} restored or present")
    return result


def _restore_entry(
    pool: FilesystemArtifactStore,
    entry: ArtifactRecord,
    store: ArtifactStore,
    repair: bool,
    result: ArtifactsRestore,
) -> None:
    """One entry written into ``store``, kept as present, or recorded as a problem."""
    try:
        if entry.kind == "blob":
            _restore_blob(pool, entry, store, repair, result)
            return
        data = pool.read_bytes(entry.tenant, entry.sha256)  # re-hashed against the manifest's digest
        try:
            existing: bytes | None = store.get_object(entry.tenant, entry.name)
        except NotFound:
            existing = None
        if existing == data:
            result.present += 1
        else:
            store.put_object(entry.tenant, entry.name, data)
            result.written += 1
            result.bytes_written += len(data)
    except (IntegrityViolation, Conflict, NotFound) as error:
        result.problems.append(f"{entry.kind} {entry.tenant}/{entry.name}: {error}")


def _restore_blob(
    pool: FilesystemArtifactStore,
    entry: ArtifactRecord,
    store: ArtifactStore,
    repair: bool,
    result: ArtifactsRestore,
) -> None:
    if store.exists(entry.tenant, entry.name):
        try:
            verify_artifact(store, entry.tenant, entry.name)
            result.present += 1
            return
        except IntegrityViolation:
            if not repair:
                raise IntegrityViolation(
                    "present in the target but corrupted; restore with --yes to replace it from the backup"
                ) from None
            store.delete(entry.tenant, entry.name)
            result.repaired += 1
    with tempfile.TemporaryDirectory(prefix="evolution-restore-") as tmp:
        path = Path(tmp) / "blob"
        h = hashlib.sha256()
        size = 0
        with pool.open(entry.tenant, entry.sha256) as reader, path.open("wb") as out:
            while block := reader.read(READ_BLOCK):
                h.update(block)
                size += len(block)
                out.write(block)
        if h.hexdigest() != entry.sha256 or size != entry.size:
            raise IntegrityViolation(
                f"the backup's copy is corrupted: it hashes to {h.hexdigest()} ({size} bytes), "
                f"the manifest says {entry.sha256} ({entry.size} bytes)"
            )
        stored = store.put_file(entry.tenant, path)
    if stored != entry.name:
        raise IntegrityViolation(f"restored bytes hash to {stored}, not {entry.name}")
    result.written += 1
    result.bytes_written += size
