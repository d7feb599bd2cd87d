"""The S3/MinIO artifact store's settings: a section of the settings, so reading them loads no boto3.

The buckets those settings name are :mod:`evolution.integrity.s3_buckets`; the store,
:mod:`evolution.integrity.s3_artifacts`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

BUCKET_PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")


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
            not BUCKET_PREFIX_PATTERN.match(prefix)
            or prefix.startswith(RESERVED_BUCKET_PREFIXES)
            or ".." in prefix
        ):
            raise ValueError(
                f"bucket_prefix {prefix!r} must match {BUCKET_PREFIX_PATTERN.pattern} (lowercase letters, digits, "
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
