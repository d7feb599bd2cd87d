"""Content-addressed artifact storage: the port and its embedded filesystem adapter.

An artifact's name is the SHA-256 of its bytes, so a name can only ever mean one content: writes are
idempotent, files are never overwritten, and every read can be checked against the name. Tenant ids and
digests are validated against strict patterns before they touch a path, which is what makes path traversal
impossible (not string cleaning after the fact).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from evolution.errors import IntegrityViolation, InvalidInput, NotFound

TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")
READ_BLOCK = 1024 * 1024


def validate_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant):
        raise InvalidInput(f"tenant id {tenant!r} must match {TENANT_PATTERN.pattern}")
    return tenant


def validate_digest(digest: str) -> str:
    if not isinstance(digest, str) or not DIGEST_PATTERN.match(digest):
        raise InvalidInput(f"artifact digest {digest!r} is not 64 lowercase hex characters (SHA-256)")
    return digest


@runtime_checkable
class ArtifactStore(Protocol):
    """Port: write-once, content-addressed blobs per tenant (a directory here; S3 + object lock in prod)."""

    def put_bytes(self, tenant: str, data: bytes) -> str:
        """Store ``data``; returns its SHA-256 hex digest. Storing the same bytes again is a no-op."""
        ...

    def put_file(self, tenant: str, path: Path) -> str:
        """Store a file's content, streamed; returns its SHA-256 hex digest."""
        ...

    def open(self, tenant: str, digest: str) -> BinaryIO:
        """A binary reader over the stored bytes. It does NOT verify: read_bytes and verify_artifact do."""
        ...

    def read_bytes(self, tenant: str, digest: str) -> bytes:
        """The stored bytes, re-hashed: raises IntegrityViolation if they no longer match ``digest``."""
        ...

    def exists(self, tenant: str, digest: str) -> bool: ...

    def delete(self, tenant: str, digest: str) -> bool:
        """Remove an artifact (garbage collection only); True if it existed."""
        ...

    def list_digests(self, tenant: str) -> list[str]:
        """Every stored digest of the tenant, sorted."""
        ...


def verify_artifact(store: ArtifactStore, tenant: str, digest: str) -> int:
    """Stream the artifact through SHA-256 without holding it in memory; returns its size or raises."""
    h = hashlib.sha256()
    size = 0
    with store.open(tenant, digest) as reader:
        while block := reader.read(READ_BLOCK):
            h.update(block)
            size += len(block)
    if h.hexdigest() != digest:
        raise IntegrityViolation(
            f"artifact {tenant}/{digest} is corrupted: its content hashes to {h.hexdigest()}"
        )
    return size


class FilesystemArtifactStore:
    """``root/<tenant>/sha256/<ab>/<digest>``: files mode 0444, written once via temp file + hard link."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- paths ----------------------------------------------------------------------------------

    def _tenant_dir(self, tenant: str) -> Path:
        return self.root / validate_tenant(tenant)

    def _path(self, tenant: str, digest: str) -> Path:
        validate_digest(digest)
        return self._tenant_dir(tenant) / "sha256" / digest[:2] / digest

    def _ensure_dir(self, path: Path) -> None:
        """Create ``path`` below the root, refusing any symlinked component: it could point anywhere."""
        current = self.root
        for part in path.relative_to(self.root).parts:
            current = current / part
            try:
                info = os.lstat(current)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):  # a concurrent writer made it: fine
                    os.mkdir(current, 0o755)
                info = os.lstat(current)
            if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
                raise IntegrityViolation(f"artifact store path {current} is a symlink or not a directory")

    def _check_no_symlinks(self, path: Path) -> None:
        current = self.root
        for part in path.relative_to(self.root).parts[:-1]:
            current = current / part
            if current.is_symlink():
                raise IntegrityViolation(f"artifact store path {current} is a symlink")

    # -- writing --------------------------------------------------------------------------------

    def _commit(self, tenant: str, tmp: Path, digest: str, size: int) -> str:
        """Link the finished temp file to its content address, unless that content is already there."""
        final = self._path(tenant, digest)
        self._ensure_dir(final.parent)
        try:
            os.link(tmp, final)
        except FileExistsError:
            self._check_existing(final, size)
        else:
            _fsync_dir(final.parent)
        return digest

    @staticmethod
    def _check_existing(final: Path, size: int) -> None:
        info = os.lstat(final)
        if not stat.S_ISREG(info.st_mode):
            raise IntegrityViolation(f"artifact {final} exists but is not a regular file")
        if info.st_size != size:
            raise IntegrityViolation(
                f"artifact {final} is corrupted: it holds {info.st_size} bytes, its digest names {size}"
            )

    def _temp(self, tenant: str) -> tuple[Path, int]:
        staging = self._tenant_dir(tenant) / "tmp"
        self._ensure_dir(staging)
        tmp = staging / f"{secrets.token_hex(12)}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        return tmp, fd

    def put_bytes(self, tenant: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        final = self._path(tenant, digest)
        if os.path.lexists(final):
            self._check_no_symlinks(final)
            self._check_existing(final, len(data))
            return digest
        tmp, fd = self._temp(tenant)
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                _seal(fd)
            finally:
                os.close(fd)
            return self._commit(tenant, tmp, digest, len(data))
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, tenant: str, path: Path) -> str:
        try:
            src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as error:
            raise InvalidInput(f"cannot read {path} for storing (missing, or a symlink): {error}") from None
        try:
            if not stat.S_ISREG(os.fstat(src).st_mode):
                raise InvalidInput(f"{path} is not a regular file")
            tmp, fd = self._temp(tenant)
            try:
                h = hashlib.sha256()
                size = 0
                try:
                    while block := os.read(src, READ_BLOCK):
                        h.update(block)
                        size += len(block)
                        view = memoryview(block)
                        while view:
                            view = view[os.write(fd, view) :]
                    _seal(fd)
                finally:
                    os.close(fd)
                return self._commit(tenant, tmp, h.hexdigest(), size)
            finally:
                tmp.unlink(missing_ok=True)
        finally:
            os.close(src)

    # -- reading --------------------------------------------------------------------------------

    def _open_fd(self, tenant: str, digest: str) -> int:
        final = self._path(tenant, digest)
        self._check_no_symlinks(final)
        try:
            fd = os.open(final, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise NotFound(f"artifact {tenant}/{digest} does not exist") from None
        except OSError as error:  # ELOOP: the file itself is a symlink
            raise IntegrityViolation(f"artifact {tenant}/{digest} cannot be opened safely: {error}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise IntegrityViolation(f"artifact {tenant}/{digest} is not a regular file")
        return fd

    def open(self, tenant: str, digest: str) -> BinaryIO:
        return os.fdopen(self._open_fd(tenant, digest), "rb")

    def read_bytes(self, tenant: str, digest: str) -> bytes:
        with self.open(tenant, digest) as reader:
            data = reader.read()
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise IntegrityViolation(
                f"artifact {tenant}/{digest} is corrupted: its content hashes to {actual}"
            )
        return data

    def exists(self, tenant: str, digest: str) -> bool:
        final = self._path(tenant, digest)
        return final.is_file() and not final.is_symlink()

    def delete(self, tenant: str, digest: str) -> bool:
        final = self._path(tenant, digest)
        self._check_no_symlinks(final)
        try:
            final.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(final.parent)
        return True

    def list_digests(self, tenant: str) -> list[str]:
        return sorted(self._iter_digests(self._tenant_dir(tenant) / "sha256"))

    @staticmethod
    def _iter_digests(base: Path) -> Iterator[str]:
        if not base.is_dir() or base.is_symlink():
            return
        for shard in base.iterdir():
            if shard.is_symlink() or not shard.is_dir():
                continue
            for entry in shard.iterdir():
                name = entry.name
                if (
                    DIGEST_PATTERN.match(name)
                    and name[:2] == shard.name
                    and entry.is_file()
                    and not entry.is_symlink()
                ):
                    yield name


def _seal(fd: int) -> None:
    """Make the finished temp file read-only and durable before it becomes visible under its address."""
    os.fchmod(fd, 0o444)
    os.fsync(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
