"""The S3/MinIO artifact store's settings, and the per-tenant buckets it keeps: naming, provisioning, doctor check.

:class:`~evolution.integrity.s3_artifacts.S3ArtifactStore` reads and writes objects; everything about the buckets
those objects live in is here, in :class:`S3Buckets`. The store's settings (:class:`S3StoreConfig`) live here too:
most of them say how to reach and provision buckets, and the bucket prefix is validated by the naming rules below.

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
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from evolution.errors import Conflict, EvolutionError, NotFound, PermissionDenied
from evolution.integrity.artifacts import TENANT_PATTERN, validate_tenant
from evolution.integrity.aws import boto_client, error_code, http_status
from evolution.observability.checks import CheckResult

logger = logging.getLogger(__name__)

_BUCKET_PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
_BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_HASHED_SUFFIX = re.compile(r"-[0-9a-f]{16}$")
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
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
