"""Which backup a restore (or ``backup check``) uses, which artifacts it takes, and whether all of it is sound.

:func:`choose_backup` picks the backup (the newest fitting one in a location, or the one for a point in time);
:func:`artifact_entries` adds, for a registry recovered past it, the artifacts of later backups;
:func:`check_backup` verifies every signature and digest a restore would rely on, before anything is changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from evolution.backup.artifacts_backup import check_pool
from evolution.backup.manifest import (
    MANIFEST_NAME,
    ArtifactRecord,
    BackupListing,
    BackupManifest,
    Part,
    Progress,
    check_files,
    list_backups,
    no_progress,
    pool_of,
    read_manifest,
    verify_manifest_signature,
)
from evolution.errors import IntegrityViolation, InvalidInput, NotFound
from evolution.progress import ProgressMeter
from evolution.timeutil import as_utc


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


def check_backup(
    chosen: Chosen,
    parts: Sequence[Part],
    entries: Sequence[ArtifactRecord] = (),
    progress: Progress = no_progress,
    meter: ProgressMeter | None = None,
) -> list[str]:
    """Signatures and digests of everything a restore of ``parts`` would use; the problems (empty: sound).

    ``meter``: a task over the files' bytes, then one over the artifacts.
    """
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
    problems += check_files(backup_dir, records, progress, meter)
    if "artifacts" in parts:
        progress(f"checking {len(entries)} artifacts in the pool …")
        problems += check_pool(pool_of(backup_dir), entries, progress, meter)
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
