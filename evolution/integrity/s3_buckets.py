"""The per-tenant buckets of the S3/MinIO artifact store: naming, provisioning, doctor check.

:class:`~evolution.integrity.s3_artifacts.S3ArtifactStore` reads and writes objects; everything about the buckets
those objects live in is here, in :class:`S3Buckets`. The store's settings
(:class:`~evolution.integrity.s3_config.S3StoreConfig`, apart so that reading settings loads no boto3) mostly say how
to reach and provision buckets; their bucket prefix follows the naming rules below.

Buckets are created on the first *write* for a tenant (reads of an unknown tenant find nothing and create
nothing), with versioning enabled, and with object lock when ``object_lock`` is set and the server supports it
(``ObjectLockEnabledForBucket``; if the server refuses, the bucket is created without it and a warning is logged).

Bucket names (see :func:`bucket_name_for`): ``<bucket_prefix><tenant>`` when that is a valid DNS-style bucket name,
the tenant has no ``_`` and the name does not end in ``-`` plus 16 hex digits; otherwise
``<bucket_prefix><readable>-<first 16 hex of sha256(tenant)>`` where ``readable`` is the tenant id with ``_`` -> ``-``,
truncated to fit 63 characters. The two forms cannot collide (only the second ends in ``-<16 hex>``), so two
tenants never share a bucket.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from evolution.errors import Conflict, EvolutionError, NotFound, PermissionDenied
from evolution.integrity.artifacts import TENANT_PATTERN, validate_tenant
from evolution.integrity.aws import boto_client, error_code, http_status
from evolution.integrity.s3_config import RESERVED_BUCKET_PREFIXES, S3StoreConfig
from evolution.observability.checks import CheckResult

logger = logging.getLogger(__name__)

_BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_HASHED_SUFFIX = re.compile(r"-[0-9a-f]{16}$")
_RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", "--table-s3")
MISSING_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket", "NoSuchVersion"}
_DENIED = {"403", "AccessDenied", "Forbidden", "AllAccessDisabled"}
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "InvalidClientTokenId",
}


def make_s3_client(config: S3StoreConfig) -> Any:
    """The S3 client for ``config``: SigV4, path-style for an explicit endpoint (MinIO) unless told otherwise."""
    style = config.addressing_style
    if style == "auto":
        style = "path" if config.endpoint_url else "auto"
    return boto_client(
        "s3",
        config,
        verify=config.verify_tls,
        signature_version="s3v4",
        s3={"addressing_style": style},
        max_pool_connections=max(10, config.max_concurrency * 2),  # room for the parallel multipart parts
    )


def _is_valid_direct_bucket(name: str) -> bool:
    return (
        bool(_BUCKET_PATTERN.match(name))
        and not name.startswith(RESERVED_BUCKET_PREFIXES)
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


def has_code(error: ClientError, codes: set[str]) -> bool:
    """True if the error's code, or its HTTP status (S3 answers HEAD without a body), is one of ``codes``."""
    return error_code(error) in codes or str(http_status(error)) in codes


def raise_domain_error(error: ClientError, what: str) -> None:
    """Turn a client error that is a domain fact into a domain error; leave transient ones to the caller."""
    if has_code(error, MISSING_CODES):
        raise NotFound(f"{what} does not exist") from None
    if has_code(error, _DENIED) or error_code(error) in _BAD_CREDENTIALS:
        raise PermissionDenied(
            f"S3 refused access to {what} ({error_code(error) or http_status(error)}): check the store's "
            "credentials and bucket policy"
        ) from None


class S3Buckets:
    """The tenants' buckets of one store: named, made ready on first write, looked up for reads. Thread-safe."""

    def __init__(self, config: S3StoreConfig, client: Any) -> None:
        self.config = config
        self.client = client
        self._ready: set[str] = set()  # created/checked for writing: versioning (and lock) in place
        self._existing: set[str] = set()  # seen to exist by a read
        self._known_tenants: set[str] = set()
        self._listed_tenants: tuple[float, frozenset[str]] = (0.0, frozenset())
        self._lock = threading.Lock()

    def name(self, tenant: str) -> str:
        return bucket_name_for(self.config.bucket_prefix, tenant)

    def exists(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as error:
            if has_code(error, MISSING_CODES):
                return False
            if has_code(error, _DENIED):
                raise PermissionDenied(
                    f"bucket {bucket} exists but this store may not use it (owned by another account?); "
                    "choose another bucket_prefix or fix the bucket policy"
                ) from None
            raise
        return True

    def for_write(self, tenant: str) -> str:
        """The tenant's bucket, created (versioned, locked if configured) on first write."""
        bucket = self.name(tenant)
        if bucket in self._ready:
            return bucket
        if not self.exists(bucket):
            self._create(bucket)
        self._ensure_versioning(bucket)
        if self.config.object_lock:
            self._ensure_object_lock(bucket)
        with self._lock:
            self._ready.add(bucket)
            self._known_tenants.add(tenant)
        return bucket

    def for_read(self, tenant: str) -> str | None:
        """The tenant's bucket if it exists (None if not); never creates one."""
        bucket = self.name(tenant)
        if bucket in self._ready or bucket in self._existing:
            return bucket
        if self.exists(bucket):
            with self._lock:
                self._existing.add(bucket)  # buckets are never removed by the store: once seen, keep it
            return bucket
        return None

    def other_tenants(self, tenant: str) -> set[str]:
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

    # -- provisioning ---------------------------------------------------------------------------

    def _create(self, bucket: str) -> None:
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
                code = error_code(error)
                if code == "BucketAlreadyOwnedByYou":
                    return  # a concurrent writer made it
                if code == "BucketAlreadyExists":
                    raise Conflict(
                        f"bucket name {bucket} is taken by another account; choose another bucket_prefix"
                    ) from None
                if index + 1 < len(attempts) and not has_code(error, _DENIED):
                    logger.warning(
                        "bucket %s: creating it with object lock failed (%s); creating it without",
                        bucket,
                        code,
                    )
                    continue
                raise_domain_error(error, f"bucket {bucket}")
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
            return error_code(error) or "unknown"
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
                error_code(error),
            )

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
            code = error_code(error) or str(http_status(error))
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
            bucket = self.name(tenant)
            if not self.exists(bucket):
                if not create:
                    return CheckResult(
                        name, True, f"{bucket} does not exist yet; it is created on the first write"
                    )
                self.for_write(tenant)
            versioning = self.client.get_bucket_versioning(Bucket=bucket).get("Status") or "never enabled"
            lock = self._lock_status(bucket)
            ok = versioning == "Enabled"
            return CheckResult(name, ok, f"{bucket}: versioning {versioning}, object lock {lock}")
        except (EvolutionError, ClientError, BotoCoreError) as error:
            return CheckResult(name, False, str(error))
