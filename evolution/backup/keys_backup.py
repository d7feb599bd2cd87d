"""The key directory: the system's signing key and the event sources' keys, private keys included.

Every file is copied with mode 0600 into a 0700 directory, whatever its mode at the source, and restored the
same way. A key backup is a secret: it belongs in a separate secret store (a vault, an encrypted volume with its
own access list), not beside the registry and artifact backups that many more people can read — whoever holds
the signing key can sign models the system will trust. ``evolution backup create DEST --what keys`` writes a
keys-only backup for that purpose.

RPO 0 for keys means a key is backed up when it is created, not on the next schedule: keys are created rarely
(the signing key on the first run, a source key by ``evolution source add``), so run a keys backup right after
each of those. With a KMS signer the private key never leaves the KMS, and only the public keys here matter.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from pydantic import BaseModel, Field

from evolution.backup.manifest import FileRecord, KeysPart, file_digest, safe_join
from evolution.errors import Conflict, IntegrityViolation, NotFound
from evolution.integrity.signing import LocalSigner
from evolution.timeutil import utcnow

KEYS_SUBDIR = "keys"
SIGNING_KEY = "signing.key"


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _private_dirs(root: Path, directory: Path) -> None:
    """``root`` and every directory from it down to ``directory``, each 0700."""
    _private_dir(root)
    current = root
    for part in directory.relative_to(root).parts:
        current = current / part
        _private_dir(current)


def _write_private(root: Path, path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600), atomically: a temp file linked into place, never a half-written key."""
    _private_dirs(root, path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)  # never replaces an existing file
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _read_regular(path: Path) -> tuple[bytes, int]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IntegrityViolation(f"{path} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as reader:
            return reader.read(), stat.S_IMODE(info.st_mode)
    finally:
        os.close(fd)


def key_files(keys_dir: Path) -> list[Path]:
    """Every key file below ``keys_dir`` (no temp files); a symlink is refused, not followed."""
    out = []
    for current, dirs, files in os.walk(keys_dir):
        for name in dirs:
            if (Path(current) / name).is_symlink():
                raise IntegrityViolation(
                    f"{Path(current) / name} is a symlink: refusing to back up the key dir"
                )
        for name in files:
            path = Path(current) / name
            if name.startswith(".") and name.endswith(".tmp"):
                continue
            if path.is_symlink():
                raise IntegrityViolation(f"{path} is a symlink: refusing to back up the key dir")
            out.append(path)
    return sorted(out)


def signing_key_id(keys_dir: Path) -> str | None:
    """The key id of the home's signing key, if it has one (never creates a key)."""
    if not (keys_dir / SIGNING_KEY).exists():
        return None
    return LocalSigner(keys_dir).key_id


def backup_keys(keys_dir: Path, backup_dir: Path) -> KeysPart:
    """Copy the key directory into ``backup_dir/keys`` (files 0600, directories 0700)."""
    if not keys_dir.is_dir():
        raise NotFound(f"key directory {keys_dir} does not exist")
    target_root = backup_dir / KEYS_SUBDIR
    _private_dir(target_root)
    records = []
    for path in key_files(keys_dir):
        data, mode = _read_regular(path)
        relative = path.relative_to(keys_dir).as_posix()
        dest = safe_join(target_root, relative)
        _write_private(target_root, dest, data)
        size, digest = file_digest(dest)
        records.append(FileRecord(path=f"{KEYS_SUBDIR}/{relative}", size=size, sha256=digest, mode=mode))
    return KeysPart(files=records, signing_key_id=signing_key_id(keys_dir))


class KeysRestore(BaseModel):
    written: int = 0
    present: int = 0
    replaced: list[str] = Field(default_factory=list, description="Where differing keys were moved aside.")


def restore_keys(backup_dir: Path, part: KeysPart, keys_dir: Path, *, replace: bool = False) -> KeysRestore:
    """Put the backed-up keys into ``keys_dir`` (0600 / 0700).

    A key already there with the same bytes is kept. One with other bytes is a Conflict unless ``replace``, in
    which case it is moved aside (``<name>.replaced-<time>``, still 0600) before the backup's key goes in: a
    key is never destroyed by a restore.
    """
    _private_dir(keys_dir)
    result = KeysRestore()
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    for record in part.files:
        if not record.path.startswith(f"{KEYS_SUBDIR}/"):
            raise IntegrityViolation(f"key record {record.path!r} is outside {KEYS_SUBDIR}/")
        data, _mode = _read_regular(safe_join(backup_dir, record.path))
        dest = safe_join(keys_dir, record.path.removeprefix(f"{KEYS_SUBDIR}/"))
        if os.path.lexists(dest):
            existing, _ = _read_regular(dest)
            if existing == data:
                result.present += 1
                continue
            if not replace:
                raise Conflict(
                    f"{dest} exists with a different key; restore with --yes to move it aside and use the backup's"
                )
            aside = dest.with_name(f"{dest.name}.replaced-{stamp}")
            os.rename(dest, aside)
            result.replaced.append(str(aside))
        _write_private(keys_dir, dest, data)
        result.written += 1
    return result
