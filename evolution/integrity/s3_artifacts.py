"""The production artifact store: S3 or MinIO (boto3), a bucket per tenant, versioned, object lock if asked.

Same port and same behaviour as :class:`~evolution.integrity.artifacts.FilesystemArtifactStore` (both pass
``tests/contracts/test_artifact_store_contract.py``). This module is the object I/O; the tenants' buckets (names,
creation with versioning and object lock, the doctor check) and the store's settings are in
:mod:`evolution.integrity.s3_buckets`.

* digests live at ``sha256/<ab>/<digest>`` and named objects at ``objects/<canonical key>`` in the tenant's bucket;
* write-once is kept by the adapter, not trusted to the bucket: a HEAD check first, then a conditional PUT
  (``If-None-Match: *``, which S3 and MinIO honour) so two racing writers cannot both create the key; the same
  content again is a no-op, a named object with other bytes is a :class:`Conflict`;
* every upload carries its SHA-256 (``x-amz-checksum-sha256`` for single PUTs, per part for multipart) so the
  server refuses bytes damaged in transit, and the digest in the object's metadata;
* every read is re-hashed: a digest whose bytes no longer hash to it, or a named object whose bytes no longer match
  the checksum recorded when it was written (e.g. someone put a new version behind the store's back), raises
  :class:`IntegrityViolation`;
* files at or above ``multipart_threshold_mb`` go up in ``multipart_chunk_mb`` parts, ``max_concurrency`` at a time.
  The file is hashed first (its digest is the key) and hashed again while uploading; if it changed in between,
  the upload is aborted before it completes, so nothing is stored under a digest it does not have.

``delete`` (garbage collection) puts a delete marker: earlier versions stay until a lifecycle rule expires them,
and a locked version cannot be removed before its retention ends, which is the point of the lock.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import stat
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, cast

from botocore.exceptions import BotoCoreError, ClientError

from evolution.errors import Conflict, IntegrityViolation, InvalidInput, NotFound
from evolution.integrity.artifacts import DIGEST_PATTERN, validate_digest, validate_tenant
from evolution.integrity.digest_checks import (
    READ_BLOCK,
    hash_stream,
    require_same_object,
    require_stored_size,
    verified_bytes,
)
from evolution.integrity.object_keys import canonical_object_key, canonical_prefix, key_is_under
from evolution.integrity.s3_buckets import (
    MISSING_CODES,
    S3Buckets,
    S3StoreConfig,
    has_code,
    make_s3_client,
    raise_domain_error,
)
from evolution.observability.checks import CheckResult

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
MAX_PARTS = 10_000
DIGEST_PREFIX = "sha256/"
OBJECT_PREFIX = "objects/"
SHA256_METADATA = "sha256"  # x-amz-meta-sha256: hex SHA-256 of the whole object, written by this adapter
_EXISTS = {"412", "PreconditionFailed", "ConditionalRequestConflict"}
_UNSUPPORTED = {"501", "NotImplemented"}


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


class _AlreadyThere(Exception):
    """The conditional write found the key taken (412): compare with what is there."""


class S3ArtifactStore:
    """The ArtifactStore port over S3/MinIO. Thread-safe (boto3 clients are); one instance per process."""

    def __init__(self, config: S3StoreConfig, *, client: Any | None = None) -> None:
        self.config = config
        self.client = client if client is not None else make_s3_client(config)
        self.buckets = S3Buckets(config, self.client)
        self._conditional = config.conditional_writes

    def __repr__(self) -> str:
        return (
            f"S3ArtifactStore(endpoint_url={self.config.endpoint_url!r}, region={self.config.region!r}, "
            f"bucket_prefix={self.config.bucket_prefix!r})"
        )

    def bucket_name(self, tenant: str) -> str:
        return self.buckets.name(tenant)

    def check(self, tenant: str | None = None, *, create: bool = False) -> list[CheckResult]:
        """For ``evolution doctor``: S3 reachable, credentials accepted, the tenant's bucket (never raises)."""
        return self.buckets.check(tenant, create=create)

    # -- low-level object I/O -------------------------------------------------------------------

    def _head(self, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], self.client.head_object(Bucket=bucket, Key=key))
        except ClientError as error:
            if has_code(error, MISSING_CODES):
                return None
            raise_domain_error(error, f"s3://{bucket}/{key}")
            raise

    def _conditional_call(self, method: Any, **kwargs: Any) -> Any:
        """Call with If-None-Match: * (if enabled); 412 -> _AlreadyThere; 501 -> disable and retry without."""
        if self._conditional:
            try:
                return method(**kwargs, IfNoneMatch="*")
            except ClientError as error:
                if has_code(error, _EXISTS):
                    raise _AlreadyThere from None
                if not has_code(error, _UNSUPPORTED):
                    raise
                logger.warning("S3 endpoint does not support conditional writes; relying on HEAD checks only")
                self._conditional = False
        return method(**kwargs)

    def _put_new(self, bucket: str, key: str, data: bytes, sha256_hex: str) -> None:
        try:
            self._conditional_call(
                self.client.put_object,
                Bucket=bucket,
                Key=key,
                Body=data,
                ChecksumAlgorithm="SHA256",  # also the header object lock asks for (x-amz-sdk-checksum-algorithm)
                ChecksumSHA256=_b64_sha256(data),
                Metadata={SHA256_METADATA: sha256_hex},
            )
        except ClientError as error:
            raise_domain_error(error, f"s3://{bucket}/{key}")
            raise

    def _get(self, bucket: str, key: str, what: str) -> dict[str, Any]:
        try:
            return cast(dict[str, Any], self.client.get_object(Bucket=bucket, Key=key))
        except ClientError as error:
            raise_domain_error(error, what)
            raise

    # -- digests --------------------------------------------------------------------------------

    @staticmethod
    def _digest_key(digest: str) -> str:
        return f"{DIGEST_PREFIX}{digest[:2]}/{digest}"

    def _store_digest(self, tenant: str, digest: str, size: int, upload: Callable[[str, str], None]) -> str:
        """Write-once: ``upload(bucket, key)`` if the digest is absent; else (or if a racing writer won) check it."""
        bucket = self.buckets.for_write(tenant)
        key = self._digest_key(digest)
        head = self._head(bucket, key)
        if head is None:
            try:
                upload(bucket, key)
                return digest
            except _AlreadyThere:
                head = self._head(bucket, key)
                if head is None:
                    raise IntegrityViolation(
                        f"artifact {tenant}/{digest} vanished while being written"
                    ) from None
        require_stored_size(f"{tenant}/{digest}", int(head.get("ContentLength", -1)), size)
        return digest

    def put_bytes(self, tenant: str, data: bytes) -> str:
        validate_tenant(tenant)
        data = bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        return self._store_digest(
            tenant, digest, len(data), lambda bucket, key: self._put_new(bucket, key, data, digest)
        )

    def put_file(self, tenant: str, path: Path) -> str:
        validate_tenant(tenant)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as error:
            raise InvalidInput(f"cannot read {path} for storing (missing, or a symlink): {error}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInput(f"{path} is not a regular file")
            if info.st_size < self.config.multipart_threshold_mb * MIB:
                chunks = []
                while block := os.read(fd, READ_BLOCK):
                    chunks.append(block)
                return self.put_bytes(tenant, b"".join(chunks))
            digest, size = _hash_fd(fd)

            def upload(bucket: str, key: str) -> None:
                self._multipart_upload(bucket, key, fd, digest, size, str(path))

            return self._store_digest(tenant, digest, size, upload)
        finally:
            os.close(fd)

    def _part_size(self, size: int) -> int:
        part = int(self.config.multipart_chunk_mb * MIB)
        return max(part, math.ceil(size / MAX_PARTS))

    def _multipart_upload(self, bucket: str, key: str, fd: int, digest: str, size: int, name: str) -> None:
        """Upload ``fd`` in parts while hashing it again; complete only if the content still is ``digest``."""
        part_size = self._part_size(size)
        created = self.client.create_multipart_upload(
            Bucket=bucket, Key=key, Metadata={SHA256_METADATA: digest}, ChecksumAlgorithm="SHA256"
        )
        upload_id = created["UploadId"]
        completed = False
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            rehash = hashlib.sha256()
            parts: list[dict[str, Any]] = []
            pending: deque[Future[dict[str, Any]]] = deque()
            with ThreadPoolExecutor(
                max_workers=self.config.max_concurrency, thread_name_prefix="s3-part"
            ) as pool:
                number = 0
                while True:
                    chunk = _read_exactly(fd, part_size)
                    if not chunk and number > 0:
                        break
                    number += 1
                    rehash.update(chunk)
                    pending.append(pool.submit(self._upload_part, bucket, key, upload_id, number, chunk))
                    if len(pending) >= self.config.max_concurrency:
                        parts.append(pending.popleft().result())
                    if len(chunk) < part_size:
                        break
                while pending:
                    parts.append(pending.popleft().result())
            if rehash.hexdigest() != digest:
                raise IntegrityViolation(f"file {name} changed while it was being stored; nothing was stored")
            self._conditional_call(
                self.client.complete_multipart_upload,
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            completed = True
            logger.debug("stored s3://%s/%s in %d parts", bucket, key, len(parts))
        except ClientError as error:
            raise_domain_error(error, f"s3://{bucket}/{key}")
            raise
        finally:
            if not completed:
                try:
                    self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
                except (ClientError, BotoCoreError) as error:  # a lifecycle rule cleans up stale uploads
                    logger.warning("could not abort multipart upload of s3://%s/%s: %s", bucket, key, error)

    def _upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, chunk: bytes
    ) -> dict[str, Any]:
        checksum = _b64_sha256(chunk)
        response = self.client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=chunk,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
        )
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def _open_digest(self, tenant: str, digest: str) -> dict[str, Any]:
        validate_digest(digest)
        bucket = self.buckets.for_read(tenant)
        if bucket is None:
            raise NotFound(f"artifact {tenant}/{digest} does not exist")
        return self._get(bucket, self._digest_key(digest), f"artifact {tenant}/{digest}")

    def open(self, tenant: str, digest: str) -> BinaryIO:
        return cast(BinaryIO, self._open_digest(tenant, digest)["Body"])

    def read_bytes(self, tenant: str, digest: str) -> bytes:
        body = self._open_digest(tenant, digest)["Body"]
        with body:
            data = cast(bytes, body.read())
        return verified_bytes(tenant, digest, data)

    def exists(self, tenant: str, digest: str) -> bool:
        validate_digest(digest)
        bucket = self.buckets.for_read(tenant)
        return bucket is not None and self._head(bucket, self._digest_key(digest)) is not None

    def delete(self, tenant: str, digest: str) -> bool:
        """Put a delete marker (versions stay, as the bucket's versioning and lock require); True if it existed."""
        validate_digest(digest)
        bucket = self.buckets.for_read(tenant)
        key = self._digest_key(digest)
        if bucket is None or self._head(bucket, key) is None:
            return False
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except ClientError as error:
            raise_domain_error(error, f"artifact {tenant}/{digest}")
            raise
        return True

    def _list_keys(self, bucket: str, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                keys.extend(str(item["Key"]) for item in page.get("Contents", []))
        except ClientError as error:
            if has_code(error, MISSING_CODES):
                return []
            raise_domain_error(error, f"bucket {bucket}")
            raise
        return keys

    def list_digests(self, tenant: str) -> list[str]:
        validate_tenant(tenant)
        bucket = self.buckets.for_read(tenant)
        if bucket is None:
            return []
        digests = []
        for key in self._list_keys(bucket, DIGEST_PREFIX):
            parts = key.split("/")
            if len(parts) == 3 and DIGEST_PATTERN.match(parts[2]) and parts[1] == parts[2][:2]:
                digests.append(parts[2])
        return sorted(digests)

    # -- named objects --------------------------------------------------------------------------

    def _canonical(self, tenant: str, key: str) -> str:
        validate_tenant(tenant)
        return canonical_object_key(tenant, key, other_tenants=self.buckets.other_tenants(tenant))

    def _read_object(self, tenant: str, bucket: str, canonical: str) -> bytes:
        response = self._get(bucket, OBJECT_PREFIX + canonical, f"object {tenant}/{canonical}")
        with response["Body"] as body:
            data = cast(bytes, body.read())
        recorded = response.get("Metadata", {}).get(SHA256_METADATA)
        if recorded != hashlib.sha256(data).hexdigest():
            raise IntegrityViolation(
                f"object {tenant}/{canonical} does not match the SHA-256 recorded when it was written: it was "
                "replaced or altered outside the store"
            )
        return data

    def put_object(self, tenant: str, key: str, data: bytes) -> str:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidInput(f"object data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        canonical = self._canonical(tenant, key)
        bucket = self.buckets.for_write(tenant)
        full = OBJECT_PREFIX + canonical
        if self._head(bucket, full) is None:
            self._check_no_prefix_clash(bucket, canonical)
            try:
                self._put_new(bucket, full, data, hashlib.sha256(data).hexdigest())
                return canonical
            except _AlreadyThere:
                pass
        require_same_object(tenant, canonical, self._read_object(tenant, bucket, canonical), data)
        return canonical

    def _check_no_prefix_clash(self, bucket: str, canonical: str) -> None:
        """Like files and directories: ``a`` and ``a/b`` cannot both be objects (the filesystem twin agrees)."""
        segments = canonical.split("/")
        for end in range(1, len(segments)):
            ancestor = "/".join(segments[:end])
            if self._head(bucket, OBJECT_PREFIX + ancestor) is not None:
                raise Conflict(
                    f"object key {canonical!r} cannot be stored: {ancestor!r} is already an object"
                )
        below = self.client.list_objects_v2(Bucket=bucket, Prefix=f"{OBJECT_PREFIX}{canonical}/", MaxKeys=1)
        if below.get("KeyCount", 0) or below.get("Contents"):
            raise Conflict(
                f"object key {canonical!r} cannot be stored: it is already a prefix of other objects"
            )

    def get_object(self, tenant: str, key: str) -> bytes:
        canonical = self._canonical(tenant, key)
        bucket = self.buckets.for_read(tenant)
        if bucket is None:
            raise NotFound(f"object {tenant}/{canonical} does not exist")
        return self._read_object(tenant, bucket, canonical)

    def list_objects(self, tenant: str, prefix: str = "") -> list[str]:
        validate_tenant(tenant)
        prefix = canonical_prefix(tenant, prefix, other_tenants=self.buckets.other_tenants(tenant))
        bucket = self.buckets.for_read(tenant)
        if bucket is None:
            return []
        keys = []
        for full in self._list_keys(bucket, OBJECT_PREFIX + prefix):
            key = full[len(OBJECT_PREFIX) :]
            try:
                canonical_object_key(tenant, key)
            except InvalidInput:
                continue  # not something put_object wrote
            if key_is_under(key, prefix):
                keys.append(key)
        return sorted(keys)


def _read_exactly(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        block = os.read(fd, min(remaining, 8 * MIB))
        if not block:
            break
        chunks.append(block)
        remaining -= len(block)
    return b"".join(chunks)


def _hash_fd(fd: int) -> tuple[str, int]:
    os.lseek(fd, 0, os.SEEK_SET)
    return hash_stream(lambda size: os.read(fd, size))
