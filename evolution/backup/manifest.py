"""The backup manifest: what a backup holds, when it was taken, sizes and digests, signed.

A backup directory is complete when its ``manifest.json`` exists (it is written last, atomically). The manifest
lists every file of the backup with its SHA-256 and size, every artifact with its digest, the registry backend
and, for PostgreSQL, the WAL position of the base backup. ``manifest.sig.json`` carries an Ed25519 / ECDSA
signature over the exact bytes of ``manifest.json`` and the signer's public key.

What the signature proves: the manifest was written by the holder of that key. The public key travels with the
backup, so a restore also checks that the key is the one the restored (or existing) home signs with; a backup
forged with another key then fails either that check or ``evolution verify`` afterwards, since every snapshot,
drift report and model in the registry is signed by the home's key. What the digests prove: no file of the
backup changed since it was written (bit rot, a truncated copy, a flipped byte).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evolution.errors import EvolutionError, IntegrityViolation, InvalidInput, NotFound
from evolution.integrity.manifest import validate_relative_name
from evolution.integrity.signing import Signature, Signer, key_id_for_public_pem, verify_signature
from evolution.progress import Advance, ProgressMeter, metered
from evolution.timeutil import utcnow

BACKUP_FORMAT = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig.json"
POOL_DIR = "pool"
INCOMPLETE_SUFFIX = ".incomplete"
READ_BLOCK = 1024 * 1024

Part = Literal["registry", "artifacts", "keys"]
ALL_PARTS: tuple[Part, ...] = ("registry", "artifacts", "keys")
Backend = Literal["sqlite", "postgresql"]
_HEX64 = r"^[0-9a-f]{64}$"

Progress = Callable[[str], None]


def no_progress(_line: str) -> None:
    """The default progress sink: nothing (the CLI passes typer.echo)."""


class BackupFailed(EvolutionError):
    """A backup or restore step could not be carried out (a tool failed, a server did not recover)."""

    error_type = "BackupFailed"


class FileRecord(BaseModel):
    """One file of the backup, relative to the backup directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(max_length=4096)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=_HEX64)
    mode: int | None = Field(default=None, description="The source file's permission bits (keys).")

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return validate_relative_name(value)


class RegistryPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Backend
    files: list[FileRecord]
    consistent_at: datetime = Field(
        description="The copy holds exactly the transactions committed before this moment (PostgreSQL: the "
        "server's clock at the end of the base backup, the earliest time it can be recovered to)."
    )
    schema_revision: str | None = None
    row_counts: dict[str, int] = Field(
        default_factory=dict, description="SQLite: rows per table of the copy."
    )
    pg_format: Literal["tar", "plain"] | None = None
    server_version: str | None = None
    timeline: int | None = None
    start_lsn: str | None = None
    end_lsn: str | None = None
    wal_archive: str | None = Field(default=None, description="Where the server archives WAL (for PITR).")
    archive_mode: str | None = None
    archive_timeout_s: int | None = None
    pitr_possible: bool = False


class ArtifactRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    kind: Literal["blob", "object"]
    name: str = Field(description="The digest of a blob, or the canonical key of a named object.")
    sha256: str = Field(pattern=_HEX64, description="Digest of the bytes, also their address in the pool.")
    size: int = Field(ge=0)


class ArtifactsPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="The store backed up and how it was read.")
    tenants: list[str]
    entries: list[ArtifactRecord]
    copied: int = 0
    reused: int = Field(default=0, description="Already in the pool from an earlier backup: not read again.")
    bytes_total: int = 0
    bytes_copied: int = 0
    problems: list[str] = Field(default_factory=list)


class KeysPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[FileRecord]
    signing_key_id: str | None = None


class BackupManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = BACKUP_FORMAT
    backup_id: str
    started_at: datetime
    finished_at: datetime
    parts: list[Part]
    home: str
    database_backend: Backend
    signer_key_id: str
    registry: RegistryPart | None = None
    artifacts: ArtifactsPart | None = None
    keys: KeysPart | None = None

    def files(self) -> list[FileRecord]:
        out: list[FileRecord] = []
        if self.registry:
            out += self.registry.files
        if self.keys:
            out += self.keys.files
        return out

    @property
    def size_bytes(self) -> int:
        total = sum(f.size for f in self.files())
        if self.artifacts:
            total += self.artifacts.bytes_total
        return total


class ManifestSignature(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signature: Signature
    public_key_pem: str


# -- ids, paths ------------------------------------------------------------------------------------------


def new_backup_id(now: datetime | None = None) -> str:
    """Sortable by time: ``20261126T120000.123Z-1a2b3c``."""
    now = now or utcnow()
    return f"{now.strftime('%Y%m%dT%H%M%S')}.{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def safe_join(base: Path, relative: str) -> Path:
    """``base / relative`` for a path from a manifest, refusing anything that would leave ``base``."""
    try:
        validate_relative_name(relative)
    except ValueError as error:
        raise IntegrityViolation(f"backup manifest names an unsafe path: {error}") from None
    return base.joinpath(*relative.split("/"))


def file_digest(path: Path) -> tuple[int, str]:
    """(size, sha256) of a file, streamed."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(READ_BLOCK):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def record_file(backup_dir: Path, path: Path, mode: int | None = None) -> FileRecord:
    size, digest = file_digest(path)
    return FileRecord(path=path.relative_to(backup_dir).as_posix(), size=size, sha256=digest, mode=mode)


def records_under(backup_dir: Path, directory: Path) -> list[FileRecord]:
    """Every regular file below ``directory``, sorted by path."""
    out = []
    for current, _dirs, files in os.walk(directory):
        for name in files:
            path = Path(current) / name
            if path.is_file() and not path.is_symlink():
                out.append(record_file(backup_dir, path))
    return sorted(out, key=lambda r: r.path)


# -- writing and reading --------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_manifest(backup_dir: Path, manifest: BackupManifest, signer: Signer) -> None:
    """Write the signature, then the manifest (whose presence marks the backup complete)."""
    data = manifest.model_dump_json(indent=2).encode("utf-8")
    signed = ManifestSignature(signature=signer.sign(data), public_key_pem=signer.public_key_pem().decode())
    _write_atomic(backup_dir / SIGNATURE_NAME, signed.model_dump_json(indent=2).encode("utf-8"))
    _write_atomic(backup_dir / MANIFEST_NAME, data)


def read_manifest(backup_dir: Path) -> BackupManifest:
    """Parse the manifest without checking anything else (listing); see :func:`verify_backup`."""
    path = backup_dir / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{backup_dir} is not a complete backup: it has no {MANIFEST_NAME}") from None
    try:
        manifest = BackupManifest.model_validate_json(data)
    except ValidationError as error:
        raise IntegrityViolation(
            f"{path} is not a valid backup manifest: {error.errors()[0]['msg']}"
        ) from None
    if manifest.format != BACKUP_FORMAT:
        raise InvalidInput(
            f"{path}: backup format {manifest.format} is not supported (this is {BACKUP_FORMAT})"
        )
    return manifest


def verify_manifest_signature(backup_dir: Path) -> tuple[BackupManifest, str]:
    """The manifest, after its signature verified; also the signer's key id. IntegrityViolation otherwise."""
    manifest = read_manifest(backup_dir)
    data = (backup_dir / MANIFEST_NAME).read_bytes()
    try:
        signed = ManifestSignature.model_validate_json((backup_dir / SIGNATURE_NAME).read_bytes())
    except FileNotFoundError:
        raise IntegrityViolation(f"backup {backup_dir.name} has no {SIGNATURE_NAME}") from None
    except ValidationError as error:
        raise IntegrityViolation(
            f"{backup_dir / SIGNATURE_NAME} is malformed: {error.errors()[0]['msg']}"
        ) from None
    key_id = key_id_for_public_pem(signed.public_key_pem)
    if key_id != signed.signature.key_id or key_id != manifest.signer_key_id:
        raise IntegrityViolation(
            f"backup {backup_dir.name}: the manifest names signer {manifest.signer_key_id}, the signature "
            f"{signed.signature.key_id}, the enclosed public key is {key_id}"
        )
    verify_signature(signed.public_key_pem, data, signed.signature)
    return manifest, key_id


def check_files(
    backup_dir: Path,
    records: Sequence[FileRecord],
    progress: Progress = no_progress,
    meter: ProgressMeter | None = None,
) -> list[str]:
    """Re-hash every file; the problems found (empty: all match). ``meter``: a task over their bytes."""
    problems = []
    with metered(meter, "check the backup's files", sum(r.size for r in records), "bytes") as advance:
        for record in records:
            problem = _check_file(backup_dir, record, progress, advance)
            if problem:
                problems.append(problem)
    return problems


def _check_file(backup_dir: Path, record: FileRecord, progress: Progress, advance: Advance) -> str | None:
    """What is wrong with one file of the backup (None: it matches); ``advance`` is told its recorded size."""
    path = safe_join(backup_dir, record.path)
    if not path.is_file() or path.is_symlink():
        advance(record.size)
        return f"{record.path}: missing (or not a regular file)"
    size, digest = file_digest(path)
    advance(record.size)
    if size != record.size or digest != record.sha256:
        return (
            f"{record.path}: sha256 {digest[:16]}… ({size} bytes), manifest says "
            f"{record.sha256[:16]}… ({record.size} bytes)"
        )
    if record.size > 64 * 1024 * 1024:
        progress(f"  checked {record.path} ({record.size / 1e6:.0f} MB)")
    return None


# -- a backup root holding several backups ----------------------------------------------------------------


class BackupListing(BaseModel):
    path: Path
    backup_id: str
    complete: bool
    manifest: BackupManifest | None = None
    problem: str = ""


def list_backups(root: Path) -> list[BackupListing]:
    """Every backup below ``root`` (oldest first); incomplete or unreadable ones are listed with the reason."""
    if not root.is_dir():
        raise NotFound(f"backup location {root} does not exist")
    out = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name == POOL_DIR or entry.name.startswith("."):
            continue
        if entry.name.endswith(INCOMPLETE_SUFFIX):
            out.append(
                BackupListing(
                    path=entry,
                    backup_id=entry.name.removesuffix(INCOMPLETE_SUFFIX),
                    complete=False,
                    problem="incomplete (interrupted, or still running)",
                )
            )
            continue
        try:
            manifest = read_manifest(entry)
        except EvolutionError as error:
            out.append(BackupListing(path=entry, backup_id=entry.name, complete=False, problem=str(error)))
            continue
        out.append(BackupListing(path=entry, backup_id=manifest.backup_id, complete=True, manifest=manifest))
    return sorted(out, key=lambda b: (b.manifest.started_at if b.manifest else utcnow(), b.backup_id))


def pool_of(backup_dir: Path) -> Path:
    """Artifacts are kept content-addressed in a pool beside the backups (shared: incremental)."""
    return backup_dir.parent / POOL_DIR
