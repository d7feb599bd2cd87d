"""Content-addressed artifact storage: the port and its embedded filesystem adapter.

An artifact's name is the SHA-256 of its bytes, so a name can only ever mean one content: writes are
idempotent, files are never overwritten, and every read can be checked against the name. Tenant ids and
digests are validated against strict patterns before they touch a path, which is what makes path traversal
impossible (not string cleaning after the fact).

Besides digests, the store keeps write-once *named objects*, for things the system names itself (signed audit
checkpoints such as ``audit-checkpoints/000000001200.json``). Their keys are validated by
:func:`evolution.integrity.object_keys.canonical_object_key`; a key, once written, keeps its bytes forever:
writing the same bytes again is a no-op, other bytes are a :class:`Conflict`. A key cannot be both an object
and the prefix of other objects (``a`` and ``a/b``), like files and directories.
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

from evolution.errors import Conflict, IntegrityViolation, InvalidInput, NotFound
from evolution.integrity.digest_checks import (
    READ_BLOCK,
    require_same_object,
    require_stored_size,
    verified_bytes,
)
from evolution.integrity.object_keys import canonical_object_key, canonical_prefix, key_is_under

TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")


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

    def put_object(self, tenant: str, key: str, data: bytes) -> str:
        """Store a named object once; returns the canonical key. Same bytes again: no-op; others: Conflict."""
        ...

    def get_object(self, tenant: str, key: str) -> bytes:
        """The named object's bytes; NotFound if there is none under ``key``."""
        ...

    def list_objects(self, tenant: str, prefix: str = "") -> list[str]:
        """Sorted canonical keys equal to or below ``prefix`` (segment-wise; ``""`` lists all)."""
        ...


class FilesystemArtifactStore:
    """``root/<tenant>/sha256/<ab>/<digest>``: files mode 0444, written once via temp file + hard link.

    Named objects live apart from digests, at ``root/<tenant>/objects/<canonical key>``, written the same way
    (temp file, fsync, read-only, hard-linked into place so an existing object is never replaced).
    """

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
        require_stored_size(str(final), info.st_size, size)

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
                _write_all(fd, data)
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
                        _write_all(fd, block)
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
            return verified_bytes(tenant, digest, reader.read())

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

    # -- named objects: root/<tenant>/objects/<key> ----------------------------------------------

    def _other_tenants(self, tenant: str) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return [name for name in names if name != tenant and TENANT_PATTERN.match(name)]

    def _objects_dir(self, tenant: str) -> Path:
        return self._tenant_dir(tenant) / "objects"

    def _object_path(self, tenant: str, key: str) -> tuple[str, Path]:
        validate_tenant(tenant)
        canonical = canonical_object_key(tenant, key, other_tenants=self._other_tenants(tenant))
        return canonical, self._objects_dir(tenant).joinpath(*canonical.split("/"))

    def _walk_ancestors(self, path: Path) -> bool:
        """True if every directory from the root down to ``path``'s parent exists as a real directory.

        A symlink anywhere is an IntegrityViolation; a missing component or a regular file (an object whose
        key is a prefix of this one) means "not there" (False).
        """
        current = self.root
        for part in path.relative_to(self.root).parts[:-1]:
            current = current / part
            try:
                info = os.lstat(current)
            except FileNotFoundError:
                return False
            if stat.S_ISLNK(info.st_mode):
                raise IntegrityViolation(f"artifact store path {current} is a symlink")
            if not stat.S_ISDIR(info.st_mode):
                return False
        return True

    def _read_object(self, tenant: str, key: str, path: Path) -> bytes | None:
        """The object's bytes; None if absent; Conflict-worthy cases are reported by the caller."""
        if not self._walk_ancestors(path):
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            raise NotFound(
                f"object {tenant}/{key} does not exist (it is a prefix of other objects)"
            ) from None
        except OSError as error:  # ELOOP: the file itself is a symlink
            raise IntegrityViolation(f"object {tenant}/{key} cannot be opened safely: {error}") from None
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise NotFound(f"object {tenant}/{key} does not exist (it is a prefix of other objects)")
            if not stat.S_ISREG(mode):
                raise IntegrityViolation(f"object {tenant}/{key} is not a regular file")
            with os.fdopen(os.dup(fd), "rb") as reader:
                return reader.read()
        finally:
            os.close(fd)

    def _ensure_object_dir(self, tenant: str, key: str, directory: Path) -> None:
        """Like _ensure_dir, but an existing object on the way is a key conflict, not corruption."""
        current = self.root
        for part in directory.relative_to(self.root).parts:
            current = current / part
            try:
                info = os.lstat(current)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(current, 0o755)
                info = os.lstat(current)
            if stat.S_ISLNK(info.st_mode):
                raise IntegrityViolation(f"artifact store path {current} is a symlink")
            if stat.S_ISREG(info.st_mode):
                prefix = current.relative_to(self._objects_dir(tenant)).as_posix()
                raise Conflict(f"object key {key!r} cannot be stored: {prefix!r} is already an object")
            if not stat.S_ISDIR(info.st_mode):
                raise IntegrityViolation(f"artifact store path {current} is not a directory")

    def _same_or_conflict(self, tenant: str, key: str, existing: bytes, data: bytes) -> str:
        require_same_object(tenant, key, existing, data)
        return key

    def put_object(self, tenant: str, key: str, data: bytes) -> str:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidInput(f"object data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        canonical, final = self._object_path(tenant, key)
        try:
            existing = self._read_object(tenant, canonical, final)
        except NotFound:
            raise Conflict(
                f"object key {canonical!r} cannot be stored: it is already a prefix of other objects"
            ) from None
        if existing is not None:
            return self._same_or_conflict(tenant, canonical, existing, data)
        tmp, fd = self._temp(tenant)
        try:
            try:
                _write_all(fd, data)
                _seal(fd)
            finally:
                os.close(fd)
            self._ensure_object_dir(tenant, canonical, final.parent)
            try:
                os.link(tmp, final)  # never replaces: a concurrent writer's object wins, and is compared
            except FileExistsError:
                try:
                    raced = self._read_object(tenant, canonical, final)
                except NotFound:
                    raise Conflict(
                        f"object key {canonical!r} cannot be stored: it is already a prefix of other objects"
                    ) from None
                if raced is None:
                    raise IntegrityViolation(
                        f"object {tenant}/{canonical} vanished while being written"
                    ) from None
                return self._same_or_conflict(tenant, canonical, raced, data)
            _fsync_dir(final.parent)
            return canonical
        finally:
            tmp.unlink(missing_ok=True)

    def get_object(self, tenant: str, key: str) -> bytes:
        canonical, final = self._object_path(tenant, key)
        data = self._read_object(tenant, canonical, final)
        if data is None:
            raise NotFound(f"object {tenant}/{canonical} does not exist")
        return data

    def list_objects(self, tenant: str, prefix: str = "") -> list[str]:
        validate_tenant(tenant)
        prefix = canonical_prefix(tenant, prefix, other_tenants=self._other_tenants(tenant))
        base = self._objects_dir(tenant)
        start = base.joinpath(*prefix.split("/")) if prefix else base
        if not self._walk_ancestors(start):
            return []
        try:
            info = os.lstat(start)
        except FileNotFoundError:
            return []
        if stat.S_ISLNK(info.st_mode):
            raise IntegrityViolation(f"artifact store path {start} is a symlink")
        if stat.S_ISREG(info.st_mode):
            return [prefix]
        keys: list[str] = []
        for current, _dirs, files in os.walk(start, followlinks=False):
            here = Path(current)
            for name in files:
                path = here / name
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                key = path.relative_to(base).as_posix()
                try:
                    canonical_object_key(tenant, key)
                except InvalidInput:
                    continue  # not something put_object wrote
                if key_is_under(key, prefix):
                    keys.append(key)
        return sorted(keys)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # os.write may write less than it was given
        view = view[os.write(fd, view) :]


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
