"""The production artifact store: S3 or MinIO (boto3), a bucket per tenant, versioned, object lock if asked.

Same port and same behaviour as :class:`~evolution.integrity.artifacts.FilesystemArtifactStore` (both pass
``tests/contracts/test_artifact_store_contract.py``):

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

Buckets are created on the first *write* for a tenant (reads of an unknown tenant find nothing and create
nothing), with versioning enabled, and with object lock when ``object_lock`` is set and the server supports it
(``ObjectLockEnabledForBucket``; if the server refuses, the bucket is created without it and a warning is logged).
``delete`` (garbage collection) puts a delete marker: earlier versions stay until a lifecycle rule expires them,
and a locked version cannot be removed before its retention ends, which is the point of the lock.

Bucket names (see :func:`bucket_name_for`): ``<bucket_prefix><tenant>`` when that is a valid DNS-style bucket name,
the tenant has no ``_`` and the name does not end in ``-`` plus 16 hex digits; otherwise
``<bucket_prefix><readable>-<first 16 hex of sha256(tenant)>`` where ``readable`` is the tenant id with ``_`` -> ``-``,
truncated to fit 63 characters. The two forms cannot collide (only the second ends in ``-<16 hex>``), so two
tenants never share a bucket.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import re
import stat
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from evolution.errors import (
    Conflict,
    EvolutionError,
    IntegrityViolation,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from evolution.integrity.artifacts import (
    DIGEST_PATTERN,
    READ_BLOCK,
    TENANT_PATTERN,
    validate_digest,
    validate_tenant,
)
from evolution.integrity.aws import aws_session
from evolution.integrity.object_keys import canonical_object_key, canonical_prefix, key_is_under
from evolution.observability.checks import CheckResult

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
MAX_PARTS = 10_000
DIGEST_PREFIX = "sha256/"
OBJECT_PREFIX = "objects/"
SHA256_METADATA = "sha256"  # x-amz-meta-sha256: hex SHA-256 of the whole object, written by this adapter
_BUCKET_PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
_BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_HASHED_SUFFIX = re.compile(r"-[0-9a-f]{16}$")
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", "--table-s3")
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket", "NoSuchVersion"}
_DENIED = {"403", "AccessDenied", "Forbidden", "AllAccessDisabled"}
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "InvalidClientTokenId",
}
_EXISTS = {"412", "PreconditionFailed", "ConditionalRequestConflict"}
_UNSUPPORTED = {"501", "NotImplemented"}


class S3StoreConfig(BaseModel):
    """Where and how the S3/MinIO artifact store keeps tenants' artifacts. Secrets are SecretStr: never logged."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint, e.g. http://minio:9000; None: AWS S3 of the region."
    )
    region: str = Field(default="us-east-1", min_length=1, max_length=40)
    bucket_prefix: str = Field(
        default="evolution-",
        description="Bucket of tenant t: <bucket_prefix><t> (see bucket_name_for). Bucket names are global on "
        "AWS: use something unique to the installation, e.g. 'acme-prod-evolution-'.",
    )
    access_key_id: SecretStr | None = Field(
        default=None, description="None: boto3's default credential chain."
    )
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto", description="auto: path-style when endpoint_url is set (MinIO), else boto3's choice."
    )
    object_lock: bool = Field(
        default=False,
        description="Create buckets with S3 Object Lock (WORM); skipped with a warning if unsupported.",
    )
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"
    object_lock_retention_days: int | None = Field(
        default=None,
        ge=1,
        le=36500,
        description="Default retention of every object version; None: no default.",
    )
    conditional_writes: bool = Field(
        default=True,
        description="Send If-None-Match: * on writes (S3 since 2024, MinIO). Off, or if the server answers "
        "501, write-once rests on the HEAD check alone.",
    )
    multipart_threshold_mb: float = Field(
        default=64.0, gt=0, description="Files this large or larger: multipart."
    )
    multipart_chunk_mb: float = Field(
        default=16.0, ge=5, le=5120, description="Part size (S3 minimum: 5 MiB)."
    )
    max_concurrency: int = Field(default=4, ge=1, le=64, description="Parts uploaded in parallel.")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(
        default=5, ge=1, le=20, description="boto3 retries (standard mode), first try included."
    )
    verify_tls: bool = True

    @field_validator("bucket_prefix")
    @classmethod
    def _valid_prefix(cls, prefix: str) -> str:
        if (
            not _BUCKET_PREFIX_PATTERN.match(prefix)
            or prefix.startswith(_RESERVED_BUCKET_PREFIXES)
            or ".." in prefix
        ):
            raise ValueError(
                f"bucket_prefix {prefix!r} must match {_BUCKET_PREFIX_PATTERN.pattern} (lowercase letters, digits, "
                "'-'; 2-40 characters) and must not start with xn--, sthree- or amzn-s3-demo-"
            )
        return prefix

    @model_validator(mode="after")
    def _key_pair(self) -> S3StoreConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together: set both or neither")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        return self


def _is_valid_direct_bucket(name: str) -> bool:
    return (
        bool(_BUCKET_PATTERN.match(name))
        and not name.startswith(_RESERVED_BUCKET_PREFIXES)
        and not name.endswith(_RESERVED_BUCKET_SUFFIXES)
        and not _HASHED_SUFFIX.search(name)
    )


def bucket_name_for(bucket_prefix: str, tenant: str) -> str:
    """The tenant's bucket: ``<prefix><tenant>`` if that is a valid bucket name (and unambiguous), else hashed.

    Injective over valid tenant ids: the direct form never ends in ``-<16 hex>``, the hashed form always does.
    """
    validate_tenant(tenant)
    direct = f"{bucket_prefix}{tenant}"
    if "_" not in tenant and _is_valid_direct_bucket(direct):
        return direct
    suffix = hashlib.sha256(tenant.encode("ascii")).hexdigest()[:16]
    room = 63 - len(bucket_prefix) - 1 - len(suffix)
    readable = tenant.replace("_", "-")[:room].strip("-")
    stem = f"{bucket_prefix}{readable}".rstrip("-")
    return f"{stem}-{suffix}"


def make_s3_client(config: S3StoreConfig) -> Any:
    """A boto3 S3 client for ``config`` (explicit credentials if given, else boto3's default chain)."""
    style = config.addressing_style
    if style == "auto":
        style = "path" if config.endpoint_url else "auto"
    session = aws_session(
        region=config.region,
        access_key_id=config.access_key_id,
        secret_access_key=config.secret_access_key,
        session_token=config.session_token,
    )
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url,
        verify=config.verify_tls,
        config=BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": style},
            retries={"max_attempts": config.max_attempts, "mode": "standard"},
            connect_timeout=config.connect_timeout_s,
            read_timeout=config.read_timeout_s,
            max_pool_connections=max(10, config.max_concurrency * 2),
        ),
    )


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _is(error: ClientError, codes: set[str]) -> bool:
    return _code(error) in codes or str(_status(error)) in codes


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


class _AlreadyThere(Exception):
    """The conditional write found the key taken (412): compare with what is there."""


class S3ArtifactStore:
    """The ArtifactStore port over S3/MinIO. Thread-safe (boto3 clients are); one instance per process."""

    def __init__(self, config: S3StoreConfig, *, client: Any | None = None) -> None:
        self.config = config
        self.client = client if client is not None else make_s3_client(config)
        self._conditional = config.conditional_writes
        self._ready: set[str] = set()  # created/checked for writing: versioning (and lock) in place
        self._existing: set[str] = set()  # seen to exist by a read
        self._known_tenants: set[str] = set()
        self._listed_tenants: tuple[float, frozenset[str]] = (0.0, frozenset())
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"S3ArtifactStore(endpoint_url={self.config.endpoint_url!r}, region={self.config.region!r}, "
            f"bucket_prefix={self.config.bucket_prefix!r})"
        )

    # -- buckets --------------------------------------------------------------------------------

    def bucket_name(self, tenant: str) -> str:
        return bucket_name_for(self.config.bucket_prefix, tenant)

    def _raise_for(self, error: ClientError, what: str) -> None:
        """Turn a client error that is a domain fact into a domain error; leave transient ones to the caller."""
        if _is(error, _MISSING):
            raise NotFound(f"{what} does not exist") from None
        if _is(error, _DENIED) or _code(error) in _BAD_CREDENTIALS:
            raise PermissionDenied(
                f"S3 refused access to {what} ({_code(error) or _status(error)}): check the store's credentials "
                "and bucket policy"
            ) from None

    def _bucket_exists(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as error:
            if _is(error, _MISSING):
                return False
            if _is(error, _DENIED):
                raise PermissionDenied(
                    f"bucket {bucket} exists but this store may not use it (owned by another account?); "
                    "choose another bucket_prefix or fix the bucket policy"
                ) from None
            raise
        return True

    def _ensure_bucket(self, tenant: str) -> str:
        """The tenant's bucket, created (versioned, locked if configured) on first write."""
        bucket = self.bucket_name(tenant)
        if bucket in self._ready:
            return bucket
        if not self._bucket_exists(bucket):
            self._create_bucket(bucket)
        self._ensure_versioning(bucket)
        if self.config.object_lock:
            self._ensure_object_lock(bucket)
        with self._lock:
            self._ready.add(bucket)
            self._known_tenants.add(tenant)
        return bucket

    def _create_bucket(self, bucket: str) -> None:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.config.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.config.region}
        attempts = (
            [{**kwargs, "ObjectLockEnabledForBucket": True}, kwargs] if self.config.object_lock else [kwargs]
        )
        for index, attempt in enumerate(attempts):
            try:
                self.client.create_bucket(**attempt)
            except ClientError as error:
                code = _code(error)
                if code == "BucketAlreadyOwnedByYou":
                    return  # a concurrent writer made it
                if code == "BucketAlreadyExists":
                    raise Conflict(
                        f"bucket name {bucket} is taken by another account; choose another bucket_prefix"
                    ) from None
                if index + 1 < len(attempts) and not _is(error, _DENIED):
                    logger.warning(
                        "bucket %s: creating it with object lock failed (%s); creating it without",
                        bucket,
                        code,
                    )
                    continue
                self._raise_for(error, f"bucket {bucket}")
                raise
            logger.info(
                "created artifact bucket %s (object lock requested: %s)",
                bucket,
                "ObjectLockEnabledForBucket" in attempt,
            )
            return

    def _ensure_versioning(self, bucket: str) -> None:
        status = self.client.get_bucket_versioning(Bucket=bucket).get("Status")
        if status != "Enabled":
            self.client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            logger.info(
                "enabled versioning on artifact bucket %s (was %s)", bucket, status or "never enabled"
            )

    def _lock_status(self, bucket: str) -> str:
        try:
            config = self.client.get_object_lock_configuration(Bucket=bucket)
        except ClientError as error:
            return _code(error) or "unknown"
        return str(config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled", "Disabled"))

    def _ensure_object_lock(self, bucket: str) -> None:
        """Object lock on (on a bucket that predates the setting too, where allowed), with default retention."""
        lock: dict[str, Any] = {"ObjectLockEnabled": "Enabled"}
        if self.config.object_lock_retention_days:
            lock["Rule"] = {
                "DefaultRetention": {
                    "Mode": self.config.object_lock_mode,
                    "Days": self.config.object_lock_retention_days,
                }
            }
        elif self._lock_status(bucket) == "Enabled":
            return
        try:
            self.client.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=lock)
        except ClientError as error:
            logger.warning(
                "bucket %s: object lock could not be configured (%s); continuing without",
                bucket,
                _code(error),
            )

    def _bucket_for_read(self, tenant: str) -> str | None:
        """The tenant's bucket if it exists (None if not); never creates one."""
        bucket = self.bucket_name(tenant)
        if bucket in self._ready or bucket in self._existing:
            return bucket
        if self._bucket_exists(bucket):
            with self._lock:
                self._existing.add(bucket)  # buckets are never removed by the store: once seen, keep it
            return bucket
        return None

    def _other_tenants(self, tenant: str) -> set[str]:
        """Tenants this store knows of: those it wrote for, and those whose bucket name is the plain form."""
        now = time.monotonic()
        stamp, listed = self._listed_tenants
        if now - stamp > 60.0:
            names: set[str] = set()
            try:
                for entry in self.client.list_buckets().get("Buckets", []):
                    name = str(entry.get("Name", ""))
                    if name.startswith(self.config.bucket_prefix):
                        candidate = name[len(self.config.bucket_prefix) :]
                        if TENANT_PATTERN.match(candidate) and not _HASHED_SUFFIX.search(candidate):
                            names.add(candidate)
            except (ClientError, BotoCoreError) as error:  # ListAllMyBuckets may be denied: use what we know
                logger.debug("listing buckets for tenant names failed: %s", error)
            listed = frozenset(names)
            self._listed_tenants = (now, listed)
        return (set(listed) | self._known_tenants) - {tenant}

    # -- low-level object I/O -------------------------------------------------------------------

    def _head(self, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], self.client.head_object(Bucket=bucket, Key=key))
        except ClientError as error:
            if _is(error, _MISSING):
                return None
            self._raise_for(error, f"s3://{bucket}/{key}")
            raise

    def _conditional_call(self, method: Any, **kwargs: Any) -> Any:
        """Call with If-None-Match: * (if enabled); 412 -> _AlreadyThere; 501 -> disable and retry without."""
        if self._conditional:
            try:
                return method(**kwargs, IfNoneMatch="*")
            except ClientError as error:
                if _is(error, _EXISTS):
                    raise _AlreadyThere from None
                if not _is(error, _UNSUPPORTED):
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
            self._raise_for(error, f"s3://{bucket}/{key}")
            raise

    def _get(self, bucket: str, key: str, what: str) -> dict[str, Any]:
        try:
            return cast(dict[str, Any], self.client.get_object(Bucket=bucket, Key=key))
        except ClientError as error:
            self._raise_for(error, what)
            raise

    # -- digests --------------------------------------------------------------------------------

    @staticmethod
    def _digest_key(digest: str) -> str:
        return f"{DIGEST_PREFIX}{digest[:2]}/{digest}"

    @staticmethod
    def _check_existing(tenant: str, digest: str, head: dict[str, Any], size: int) -> None:
        stored = int(head.get("ContentLength", -1))
        if stored != size:
            raise IntegrityViolation(
                f"artifact {tenant}/{digest} is corrupted: it holds {stored} bytes, its digest names {size}"
            )

    def _store_digest_bytes(self, tenant: str, digest: str, data: bytes) -> str:
        bucket = self._ensure_bucket(tenant)
        key = self._digest_key(digest)
        head = self._head(bucket, key)
        if head is None:
            try:
                self._put_new(bucket, key, data, digest)
                return digest
            except _AlreadyThere:
                head = self._head(bucket, key)
                if head is None:
                    raise IntegrityViolation(
                        f"artifact {tenant}/{digest} vanished while being written"
                    ) from None
        self._check_existing(tenant, digest, head, len(data))
        return digest

    def put_bytes(self, tenant: str, data: bytes) -> str:
        validate_tenant(tenant)
        data = bytes(data)
        return self._store_digest_bytes(tenant, hashlib.sha256(data).hexdigest(), data)

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
            bucket = self._ensure_bucket(tenant)
            key = self._digest_key(digest)
            head = self._head(bucket, key)
            if head is None:
                try:
                    self._multipart_upload(bucket, key, fd, digest, size, str(path))
                    return digest
                except _AlreadyThere:
                    head = self._head(bucket, key)
                    if head is None:
                        raise IntegrityViolation(
                            f"artifact {tenant}/{digest} vanished while being written"
                        ) from None
            self._check_existing(tenant, digest, head, size)
            return digest
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
            self._raise_for(error, f"s3://{bucket}/{key}")
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
        bucket = self._bucket_for_read(tenant)
        if bucket is None:
            raise NotFound(f"artifact {tenant}/{digest} does not exist")
        return self._get(bucket, self._digest_key(digest), f"artifact {tenant}/{digest}")

    def open(self, tenant: str, digest: str) -> BinaryIO:
        return cast(BinaryIO, self._open_digest(tenant, digest)["Body"])

    def read_bytes(self, tenant: str, digest: str) -> bytes:
        body = self._open_digest(tenant, digest)["Body"]
        with body:
            data = cast(bytes, body.read())
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise IntegrityViolation(
                f"artifact {tenant}/{digest} is corrupted: its content hashes to {actual}"
            )
        return data

    def exists(self, tenant: str, digest: str) -> bool:
        validate_digest(digest)
        bucket = self._bucket_for_read(tenant)
        return bucket is not None and self._head(bucket, self._digest_key(digest)) is not None

    def delete(self, tenant: str, digest: str) -> bool:
        """Put a delete marker (versions stay, as the bucket's versioning and lock require); True if it existed."""
        validate_digest(digest)
        bucket = self._bucket_for_read(tenant)
        key = self._digest_key(digest)
        if bucket is None or self._head(bucket, key) is None:
            return False
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except ClientError as error:
            self._raise_for(error, f"artifact {tenant}/{digest}")
            raise
        return True

    def _list_keys(self, bucket: str, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                keys.extend(str(item["Key"]) for item in page.get("Contents", []))
        except ClientError as error:
            if _is(error, _MISSING):
                return []
            self._raise_for(error, f"bucket {bucket}")
            raise
        return keys

    def list_digests(self, tenant: str) -> list[str]:
        validate_tenant(tenant)
        bucket = self._bucket_for_read(tenant)
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
        return canonical_object_key(tenant, key, other_tenants=self._other_tenants(tenant))

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
        bucket = self._ensure_bucket(tenant)
        full = OBJECT_PREFIX + canonical
        if self._head(bucket, full) is None:
            self._check_no_prefix_clash(bucket, canonical)
            try:
                self._put_new(bucket, full, data, hashlib.sha256(data).hexdigest())
                return canonical
            except _AlreadyThere:
                pass
        existing = self._read_object(tenant, bucket, canonical)
        if existing != data:
            raise Conflict(
                f"object {tenant}/{canonical} already exists with other content "
                f"(sha256 {hashlib.sha256(existing).hexdigest()}); named objects are write-once"
            )
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
        bucket = self._bucket_for_read(tenant)
        if bucket is None:
            raise NotFound(f"object {tenant}/{canonical} does not exist")
        return self._read_object(tenant, bucket, canonical)

    def list_objects(self, tenant: str, prefix: str = "") -> list[str]:
        validate_tenant(tenant)
        prefix = canonical_prefix(tenant, prefix, other_tenants=self._other_tenants(tenant))
        bucket = self._bucket_for_read(tenant)
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

    # -- doctor ---------------------------------------------------------------------------------

    def check(self, tenant: str | None = None, *, create: bool = False) -> list[CheckResult]:
        """Reachability, credentials and (with ``tenant``) the tenant's bucket; never raises."""
        where = self.config.endpoint_url or f"AWS S3 ({self.config.region})"
        results: list[CheckResult] = []
        try:
            count = len(self.client.list_buckets().get("Buckets", []))
            results.append(CheckResult("s3 reachable", True, f"{where} answered"))
            results.append(CheckResult("s3 credentials", True, f"accepted ({count} buckets visible)"))
        except (NoCredentialsError, PartialCredentialsError) as error:
            results.append(CheckResult("s3 reachable", True, f"{where} (not contacted)"))
            results.append(CheckResult("s3 credentials", False, f"no usable credentials: {error}"))
            return results
        except ClientError as error:
            results.append(CheckResult("s3 reachable", True, f"{where} answered"))
            code = _code(error) or str(_status(error))
            if code in _BAD_CREDENTIALS:
                results.append(CheckResult("s3 credentials", False, f"refused by the server ({code})"))
                return results
            results.append(
                CheckResult(
                    "s3 credentials",
                    True,
                    f"accepted; listing buckets is not allowed ({code}), which is fine",
                )
            )
        except BotoCoreError as error:
            results.append(CheckResult("s3 reachable", False, f"cannot reach {where}: {error}"))
            return results
        if tenant is not None:
            results.append(self._check_bucket(tenant, create))
        return results

    def _check_bucket(self, tenant: str, create: bool) -> CheckResult:
        name = f"s3 bucket for {tenant}"
        try:
            bucket = self.bucket_name(tenant)
            if not self._bucket_exists(bucket):
                if not create:
                    return CheckResult(
                        name, True, f"{bucket} does not exist yet; it is created on the first write"
                    )
                self._ensure_bucket(tenant)
            versioning = self.client.get_bucket_versioning(Bucket=bucket).get("Status") or "never enabled"
            lock = self._lock_status(bucket)
            ok = versioning == "Enabled"
            return CheckResult(name, ok, f"{bucket}: versioning {versioning}, object lock {lock}")
        except (EvolutionError, ClientError, BotoCoreError) as error:
            return CheckResult(name, False, str(error))


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
    h = hashlib.sha256()
    size = 0
    os.lseek(fd, 0, os.SEEK_SET)
    while block := os.read(fd, READ_BLOCK):
        h.update(block)
        size += len(block)
    return h.hexdigest(), size
