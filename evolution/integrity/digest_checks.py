"""The checks every artifact store makes on what it holds, so the filesystem and S3 adapters fail alike.

A digest names exactly one content: bytes read back under it must hash to it (:func:`verified_bytes` for bytes in
memory, :func:`verify_artifact` streamed through any store), and what is already stored under it must be as long
as the bytes being stored again. A named object is write-once: storing it again is allowed only with the same
bytes. Callers (and tests) rely on the error types and words being the same whichever backend holds the bytes,
which is why they are decided here and nowhere else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from evolution.errors import Conflict, IntegrityViolation

if TYPE_CHECKING:  # artifacts.py imports this module: the port is needed for typing only
    from evolution.integrity.artifacts import ArtifactStore

READ_BLOCK = 1024 * 1024


def hash_stream(read: Callable[[int], bytes]) -> tuple[str, int]:
    """SHA-256 (hex) and size of everything ``read`` returns, a block at a time: never all of it in memory."""
    h = hashlib.sha256()
    size = 0
    while block := read(READ_BLOCK):
        h.update(block)
        size += len(block)
    return h.hexdigest(), size


def require_digest(tenant: str, digest: str, actual: str) -> None:
    """IntegrityViolation unless ``actual``, the SHA-256 of the bytes read for ``digest``, is ``digest``."""
    if actual != digest:
        raise IntegrityViolation(f"artifact {tenant}/{digest} is corrupted: its content hashes to {actual}")


def verified_bytes(tenant: str, digest: str, data: bytes) -> bytes:
    """``data``, read for ``digest``, if it still hashes to it; IntegrityViolation if not."""
    require_digest(tenant, digest, hashlib.sha256(data).hexdigest())
    return data


def verify_artifact(store: ArtifactStore, tenant: str, digest: str) -> int:
    """Stream the artifact through SHA-256 without holding it in memory; returns its size or raises."""
    with store.open(tenant, digest) as reader:
        actual, size = hash_stream(reader.read)
    require_digest(tenant, digest, actual)
    return size


def require_stored_size(artifact: str, stored: int, size: int) -> None:
    """The same digest stored again: what is there must hold ``size`` bytes (a cheap check, nothing re-read)."""
    if stored != size:
        raise IntegrityViolation(
            f"artifact {artifact} is corrupted: it holds {stored} bytes, its digest names {size}"
        )


def require_same_object(tenant: str, key: str, existing: bytes, data: bytes) -> None:
    """A named object stored again: Conflict unless ``data`` is what it already holds."""
    if existing != data:
        raise Conflict(
            f"object {tenant}/{key} already exists with other content "
            f"(sha256 {hashlib.sha256(existing).hexdigest()}); named objects are write-once"
        )
